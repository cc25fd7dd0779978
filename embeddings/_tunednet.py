"""The network of a tuned model: a truncated pretrained encoder and a trained local head.

A tuned network reads the base encoder's feature map after one of its blocks (``cut``), maps
every position through a small trained head (layer norm, a linear layer and a GELU: a
1x1-convolution), pools the codes over positions, and projects the pooled code with a second
linear layer (none when ``dim`` is 0). The output is one vector per image, like
the base network's pooled pre-logits features, so every runtime (torch, OpenVINO, ONNX Runtime)
and the 8-augmentation pooling of :func:`embeddings.embed_tiles` run it unchanged.

Pooling local codes keeps a tile's vector close to the sum of the codes of its parts: two cuts of
the same sky that share half their area share half their codes, which is what finding "the same
sky however it is cut" needs. Two poolings (``pooling``):

- ``"mean"``: the mean code over positions;
- ``"centred"``: the mean code minus the tile's median code (per channel, over positions). On
  Hubble tiles most positions are dark sky, so the median code is the tile's background: taking it
  away leaves the codes of what the tile holds (stars, galaxies), which otherwise differ between
  two cuts of the same sky by a fraction of a percent of the vector. The median is the lower
  median (what ``torch.median`` returns), written with ``torch.topk`` so that OpenVINO and ONNX
  convert it.

With ``base_weight`` > 0 the network also keeps the rest of the base encoder (its later blocks,
head convolution and average pool): the output is the L2-normalised base vector scaled by
``sqrt(base_weight)`` followed by the L2-normalised head vector scaled by
``sqrt(1 - base_weight)``, so the cosine of two tiles is ``base_weight`` times the base model's
cosine plus ``1 - base_weight`` times the head's. The deep base features keep what kind of object a
tile shows; the trained head adds which sky it is.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["POOLINGS", "LocalHead", "TunedNet", "encoder_channels", "truncated_features"]

#: Poolings of the local codes (see the module docstring).
POOLINGS = ("mean", "centred")


class LocalHead(nn.Module):
    """Per-position codes of a feature map (layer norm, linear, GELU), pooled over positions
    (``pooling``), then a linear projection (which commutes with the mean: the projected vector
    of a tile is still the mean of the projected codes of its parts).

    Parameters
    ----------
    channels : int
        Channels of the encoder feature map.
    hidden : int
        Width of the hidden layer.
    dim : int
        Length of the output vector; 0: no projection (the pooled codes, ``hidden`` long).
    pooling : str
        ``"mean"`` or ``"centred"`` (see the module docstring).
    """

    def __init__(self, channels: int, hidden: int, dim: int, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            msg = f"pooling {pooling!r} is not one of {POOLINGS}"
            raise ValueError(msg)
        self.hidden, self.dim, self.pooling = int(hidden), int(dim), pooling
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim) if dim > 0 else nn.Identity()

    @property
    def out_dim(self) -> int:
        """Length of the output vector."""
        return self.dim if self.dim > 0 else self.hidden

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, H*W, hidden)`` of a feature map ``(B, C, H, W)``."""
        x = x.flatten(2).transpose(1, 2)
        return self.act(self.fc1(self.norm(x)))

    def pool(self, codes: torch.Tensor) -> torch.Tensor:
        """Pool codes ``(B, P, hidden)`` over positions into ``(B, hidden)``."""
        mean = codes.mean(dim=1)
        if self.pooling == "mean":
            return mean
        # the lower median (torch.median's) is the smallest of the k largest, k = P - (P - 1) // 2;
        # topk on the contiguous last axis converts to OpenVINO and runs there at ~36 ms per
        # image for 8,192 x 196 codes, against 14 ms for torch.median, which has no OpenVINO
        # conversion rule (a full sort: 50 ms in torch, 220 ms in OpenVINO)
        k = codes.shape[1] - (codes.shape[1] - 1) // 2
        per_channel = codes.transpose(1, 2).contiguous()
        return mean - torch.topk(per_channel, k, dim=2, sorted=False).values.amin(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.pool(self.local(x)))


def truncated_features(net: nn.Module, x: torch.Tensor, cut: int) -> torch.Tensor:
    """The feature map of a timm EfficientNet-family ``net`` after ``net.blocks[cut]``."""
    x = net.bn1(net.conv_stem(x))
    for block in net.blocks[: cut + 1]:
        x = block(x)
    return x


def encoder_channels(net: nn.Module, cut: int) -> int:
    """Channels of ``net``'s feature map after ``net.blocks[cut]`` (from a probe pass)."""
    with torch.inference_mode():
        probe = torch.zeros(1, 3, 64, 64)
        return int(truncated_features(net, probe, cut).shape[1])


class TunedNet(nn.Module):
    """A base encoder truncated after ``blocks[cut]``, with a :class:`LocalHead` on top.

    It offers the two calls the runtimes use of a timm network (``forward_features`` and
    ``forward_head(..., pre_logits=True)``) and ``num_features`` / ``num_classes`` (0: no
    classifier).

    Parameters
    ----------
    base : torch.nn.Module
        The pretrained timm network (its blocks after ``cut`` are dropped).
    cut : int
        Index of the last encoder block used.
    hidden, dim : int
        Head sizes.
    base_weight : float
        Share of the base model's cosine in the output's cosine (0: the head alone; see the
        module docstring). With it the output has the head's + the base's feature count entries.
    pooling : str
        Pooling of the head's local codes (:data:`POOLINGS`).
    """

    def __init__(
        self,
        base: nn.Module,
        cut: int,
        hidden: int,
        dim: int,
        base_weight: float = 0.0,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        self.conv_stem = base.conv_stem
        self.bn1 = base.bn1
        self.blocks = nn.Sequential(*list(base.blocks[: cut + 1]))
        self.cut = int(cut)
        channels = encoder_channels(self, len(self.blocks) - 1)
        self.head = LocalHead(channels, hidden, dim, pooling)
        self.num_features = self.head.out_dim
        self.base_weight = float(base_weight)
        if self.base_weight > 0:
            self.deep_blocks = nn.Sequential(*list(base.blocks[cut + 1 :]))
            self.conv_head = base.conv_head
            self.bn2 = base.bn2
            self.num_features += int(base.num_features)
        self.num_classes = 0
        self.pretrained_cfg: dict[str, Any] = dict(getattr(base, "pretrained_cfg", {}) or {})

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        z = self.head(x)
        if self.base_weight <= 0:
            return z
        deep = self.bn2(self.conv_head(self.deep_blocks(x))).mean(dim=(2, 3))
        return torch.cat(
            [
                math.sqrt(self.base_weight) * F.normalize(deep, dim=-1),
                math.sqrt(1.0 - self.base_weight) * F.normalize(z, dim=-1),
            ],
            dim=-1,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

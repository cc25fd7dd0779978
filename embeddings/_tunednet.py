"""The network of a tuned model: a truncated pretrained encoder and a trained local head.

A tuned network reads the base encoder's feature map after one of its blocks (``cut``), maps
every position through a small trained head (layer norm, a linear layer and a GELU: a
1x1-convolution), pools the codes over positions, and projects the pooled code with a second
linear layer (none when ``dim`` is 0). The output is one vector per image, like
the base network's pooled pre-logits features, so every runtime (torch, OpenVINO, ONNX Runtime)
and the 8-augmentation pooling of :func:`embeddings.embed_tiles` run it unchanged.

Pooling local codes keeps a tile's vector close to the sum of the codes of its parts: two cuts of
the same sky that share half their area share half their codes, which is what finding "the same
sky however it is cut" needs. Three poolings (``pooling``):

- ``"mean"``: the mean code over positions;
- ``"centred"``: the mean code minus the tile's median code (per channel, over positions). On
  Hubble tiles most positions are dark sky, so the median code is the tile's background: taking it
  away leaves the codes of what the tile holds (stars, galaxies), which otherwise differ between
  two cuts of the same sky by a fraction of a percent of the vector. The median is the lower
  median (what ``torch.median`` returns), written with ``torch.topk`` so that OpenVINO and ONNX
  convert it.
- ``"pairs"``: second-order pooling of the centred codes (each position's code minus the tile's
  median code) over pairs of positions at fixed offsets (:data:`PAIR_OFFSETS`, in feature-map
  cells): for each offset ``d`` the sum over positions ``p`` of ``(U c_p) * (V c_{p+d})`` (two
  linear maps to ``pair_dim`` entries, elementwise product), signed square root, the offsets
  concatenated. A bag of codes says *what* a tile holds; in a crowded star field every tile
  holds much the same, and two cuts of the same sky are told from two other cuts of similar sky
  by a thin margin (0.54 against 0.49 in cosine on 47 Tuc). Pairs at an offset say *what lies
  next to what*: the arrangement, which two cuts of the same sky share in their overlap and two
  different skies do not. The cosine of two pooled vectors counts the position pairs that match in
  both codes, so it is sharper than the bag's. The signed square root damps the pairs of the
  brightest objects, which would otherwise fill the vector (the usual normalisation of bilinear
  pooling). A rotated or flipped tile has its pairs at rotated offsets, so the 8 augmentations'
  outputs are brought into one frame before they are pooled (:meth:`TunedNet.augmentation_order`,
  applied by :func:`embeddings.embed_tiles`). The pairs part of the vector is therefore
  *equivariant* to flips and rotations, not invariant: a tile turned by 90 degrees has its pair
  blocks permuted, and matches its unturned self through the base part only.

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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PAIR_OFFSETS",
    "POOLINGS",
    "LocalHead",
    "TunedNet",
    "encoder_channels",
    "truncated_features",
]

#: Poolings of the local codes (see the module docstring).
POOLINGS = ("mean", "centred", "pairs")
#: Offsets ``(dy, dx)`` in feature-map cells of the position pairs of ``"pairs"`` pooling: one and
#: two cells along each axis and diagonal, both ways. The set is closed under the 8 flips and
#: rotations, so a flipped or rotated tile's pooled vector is a permutation of the tile's
#: (:meth:`TunedNet.augmentation_order`).
PAIR_OFFSETS: tuple[tuple[int, int], ...] = tuple(
    (r * dy, r * dx)
    for r in (1, 2)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))
)


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
        ``"mean"``, ``"centred"`` or ``"pairs"`` (see the module docstring).
    pair_dim : int
        Entries per offset of ``"pairs"`` pooling (its pooled vector is ``pair_dim`` times
        ``len(PAIR_OFFSETS)`` long); 0 for the other poolings.
    """

    def __init__(
        self, channels: int, hidden: int, dim: int, pooling: str = "mean", pair_dim: int = 0
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            msg = f"pooling {pooling!r} is not one of {POOLINGS}"
            raise ValueError(msg)
        if (pooling == "pairs") != (pair_dim > 0):
            msg = f"pair_dim = {pair_dim} must be > 0 with pairs pooling and 0 without"
            raise ValueError(msg)
        if pooling == "pairs" and dim > 0:
            msg = "pairs pooling keeps its blocks of pairs by direction apart: dim must be 0"
            raise ValueError(msg)
        self.hidden, self.dim, self.pooling = int(hidden), int(dim), pooling
        self.pair_dim = int(pair_dim)
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        if self.pair_dim:
            self.pair_u = nn.Linear(hidden, self.pair_dim, bias=False)
            self.pair_v = nn.Linear(hidden, self.pair_dim, bias=False)
        pooled = self.pair_dim * len(PAIR_OFFSETS) if self.pair_dim else self.hidden
        self.pooled_dim = pooled
        self.fc2 = nn.Linear(pooled, dim) if dim > 0 else nn.Identity()

    @property
    def out_dim(self) -> int:
        """Length of the output vector."""
        return self.dim if self.dim > 0 else self.pooled_dim

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, H*W, hidden)`` of a feature map ``(B, C, H, W)``."""
        x = x.flatten(2).transpose(1, 2)
        return self.act(self.fc1(self.norm(x)))

    @staticmethod
    def background(codes: torch.Tensor) -> torch.Tensor:
        """The per-channel lower median ``(B, hidden)`` of codes ``(B, P, hidden)``."""
        # the lower median (torch.median's) is the smallest of the k largest, k = P - (P - 1) // 2;
        # topk on the contiguous last axis converts to OpenVINO and runs there at ~36 ms per
        # image for 8,192 x 196 codes, against 14 ms for torch.median, which has no OpenVINO
        # conversion rule (a full sort: 50 ms in torch, 220 ms in OpenVINO)
        k = codes.shape[1] - (codes.shape[1] - 1) // 2
        per_channel = codes.transpose(1, 2).contiguous()
        return torch.topk(per_channel, k, dim=2, sorted=False).values.amin(dim=2)

    def pool(self, codes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Pool codes ``(B, P, hidden)`` of an ``(H, W)`` map over positions."""
        if self.pooling == "mean":
            return codes.mean(dim=1)
        if self.pooling == "centred":
            return codes.mean(dim=1) - self.background(codes)
        centred = codes - self.background(codes)[:, None]
        h, w = shape
        a = self.pair_u(centred).unflatten(1, (h, w))
        b = self.pair_v(centred).unflatten(1, (h, w))
        out = []
        for dy, dx in PAIR_OFFSETS:
            y0, y1 = max(0, -dy), h - max(0, dy)
            x0, x1 = max(0, -dx), w - max(0, dx)
            prod = a[:, y0:y1, x0:x1] * b[:, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
            out.append(prod.sum(dim=(1, 2)))
        pooled = torch.cat(out, dim=1)
        # signed square root; the 1e-12 keeps its gradient finite at 0
        return torch.sign(pooled) * torch.sqrt(pooled.abs() + 1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.pool(self.local(x), (x.shape[2], x.shape[3])))


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
    pair_dim : int
        Entries per offset of ``"pairs"`` pooling (0 for the others).
    """

    def __init__(
        self,
        base: nn.Module,
        cut: int,
        hidden: int,
        dim: int,
        base_weight: float = 0.0,
        pooling: str = "mean",
        pair_dim: int = 0,
    ) -> None:
        super().__init__()
        self.conv_stem = base.conv_stem
        self.bn1 = base.bn1
        self.blocks = nn.Sequential(*list(base.blocks[: cut + 1]))
        self.cut = int(cut)
        channels = encoder_channels(self, len(self.blocks) - 1)
        self.head = LocalHead(channels, hidden, dim, pooling, pair_dim)
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

    def augmentation_order(self) -> torch.Tensor | None:
        """For ``"pairs"`` pooling: indices ``(8, num_features)`` that bring the output of each of
        the 8 augmentations (:data:`tiling.augment.AUGMENTATIONS`) into the tile's own frame.

        Rotating a tile rotates the offsets of its position pairs: the pairs at offset ``g d`` of
        the augmented tile ``g A`` are those at offset ``d`` of ``A``. Entry ``[i, j]`` is the
        output entry of augmentation ``i`` that holds entry ``j`` of the tile's frame, so
        ``out.gather(-1, order[i])`` aligns the 8 outputs before they are pooled (without it the
        mean of 8 vectors would add pairs of 8 different directions into each block, and the
        arrangement they encode would be lost). None for the other poolings (their output does
        not depend on directions).
        """
        if self.head.pooling != "pairs":
            return None
        from tiling.augment import AUGMENTATIONS, augment

        if self.head.dim > 0:  # a projection mixes the blocks: no permutation aligns them
            msg = "pairs pooling with a projection (dim > 0) cannot be aligned across augmentations"
            raise ValueError(msg)
        m = self.head.pair_dim
        start = self.num_features - self.head.out_dim  # the base vector comes first
        index = {d: k for k, d in enumerate(PAIR_OFFSETS)}
        order = torch.arange(self.num_features).repeat(len(AUGMENTATIONS), 1)
        for i in range(len(AUGMENTATIONS)):
            for d, k in index.items():
                probe = np.zeros((5, 5), dtype=np.int8)
                probe[2, 2], probe[2 + d[0], 2 + d[1]] = 1, 2
                moved = augment(probe, i)
                (y,), (x,) = np.nonzero(moved == 2)
                source = index[(int(y) - 2, int(x) - 2)]
                order[i, start + k * m : start + (k + 1) * m] = torch.arange(
                    start + source * m, start + (source + 1) * m
                )
        return order

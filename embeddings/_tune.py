"""Self-supervised tuning of an embedding model on the project's own tiles.

The objective (``"infonce"``) is contrastive: two random views of one tile (a sub-tile shift and
a small zoom, one of the 8 flips/rotations, a PSF blur, a stretch change and noise; see
:mod:`embeddings._views`) must get vectors closer to each other than to the views of every other
tile of the batch (InfoNCE with in-batch negatives, symmetric, temperature ``temperature``). The
pretrained encoder stays frozen up to ``blocks[cut]``; only the local head of
:class:`embeddings._tunednet.TunedNet` trains, so the "weights" a training unit moves are that
head's tensors (:func:`trainable_state`).

One training unit is :func:`local_steps`: K optimizer steps from given weights on the tiles of
one shard. Each call draws ``views_per_tile`` views of every tile once, runs them through the
frozen encoder once, and then samples pairs of those views for every step, so the encoder costs
``N * views_per_tile`` forward passes per unit whatever K is. Same inputs, seed and thread count
give the same bytes on one machine.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embeddings._embed import validate_tiles
from embeddings._model import EmbeddingModel
from embeddings._registry import DEFAULT_MODEL
from embeddings._tunednet import POOLINGS, TunedNet
from embeddings._views import ViewParams, make_views
from embeddings.errors import TuneError

__all__ = [
    "OBJECTIVES",
    "TuneRecipe",
    "build_tuned_net",
    "check_delta",
    "local_steps",
    "named_recipe",
    "trainable_state",
]

#: Objectives :func:`local_steps` implements.
OBJECTIVES = ("infonce",)
#: Version of the tuning code; bump when the same recipe would train other weights.
TUNE_VERSION = 1


@dataclass(frozen=True)
class TuneRecipe:
    """Everything that changes the weights a tune trains (recorded; :meth:`digest`).

    Attributes
    ----------
    base : str
        Name of the pretrained base model (:func:`embeddings.load_model`).
    objective : str
        ``"infonce"``: contrastive, two views of a tile as the positive pair, the other tiles of
        the batch as negatives.
    cut : int
        The encoder is used up to and including ``blocks[cut]`` (frozen).
    hidden, dim : int
        Width of the head's hidden layer and length of the output vector (``dim`` = 0: no
        projection, the pooled codes are the vector, ``hidden`` long).
    pooling : str
        ``"mean"``, ``"centred"`` or ``"pairs"``: how the head pools its local codes (the mean;
        the mean minus the tile's median code: its background taken away; or the background-
        centred codes of position pairs at fixed offsets: the arrangement; see
        :mod:`embeddings._tunednet`).
    pair_dim : int
        Entries per offset of ``"pairs"`` pooling (0 for the other poolings).
    steps_per_unit : int
        Optimizer steps of one training unit (K of :func:`local_steps`).
    batch_size : int
        Tiles per step (each gives two views).
    lr, weight_decay : float
        AdamW learning rate and weight decay of the local steps.
    temperature : float
        InfoNCE temperature.
    views_per_tile : int
        Views drawn per tile per unit (pairs are sampled among them).
    min_tiles : int
        Fewest tiles a unit may train on (a batch needs negatives).
    seed : int
        Seed of the head's initial weights and of the per-unit seeds.
    base_weight : float
        In ``[0, 1)``: share of the frozen base model's cosine in the tuned model's cosine (the
        base vector is concatenated to the head's, see :class:`embeddings._tunednet.TunedNet`;
        0: the head alone). Training is unchanged: only the head trains.
    views : ViewParams
        Ranges of the view transforms.
    """

    base: str = DEFAULT_MODEL
    objective: str = "infonce"
    cut: int = 4
    hidden: int = 1024
    dim: int = 256
    pooling: str = "mean"
    pair_dim: int = 0
    steps_per_unit: int = 50
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    temperature: float = 0.1
    views_per_tile: int = 4
    min_tiles: int = 16
    seed: int = 0
    base_weight: float = 0.0
    views: ViewParams = field(default_factory=ViewParams)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            msg = f"objective {self.objective!r} is not implemented; choose one of {OBJECTIVES}"
            raise TuneError(msg)
        for name in ("hidden", "steps_per_unit", "batch_size", "views_per_tile"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                msg = f"TuneRecipe.{name} = {value!r} must be a positive integer"
                raise TuneError(msg)
        if not isinstance(self.dim, int) or self.dim < 0:
            msg = f"TuneRecipe.dim = {self.dim!r} must be a positive integer, or 0 (no projection)"
            raise TuneError(msg)
        if self.pooling not in POOLINGS:
            msg = f"TuneRecipe.pooling = {self.pooling!r} is not implemented; choose one of {POOLINGS}"
            raise TuneError(msg)
        if not isinstance(self.pair_dim, int) or self.pair_dim < 0:
            msg = f"TuneRecipe.pair_dim = {self.pair_dim!r} must be a non-negative integer"
            raise TuneError(msg)
        if (self.pooling == "pairs") != (self.pair_dim > 0):
            msg = (
                f"TuneRecipe.pair_dim = {self.pair_dim} with pooling {self.pooling!r}: pairs "
                "pooling needs pair_dim > 0, the other poolings pair_dim = 0"
            )
            raise TuneError(msg)
        if self.pooling == "pairs" and self.views.rotate:
            msg = (
                "TuneRecipe.views.rotate = True with pairs pooling: a turned view has its pair "
                "blocks permuted, so the objective would train their directions away; use "
                "ViewParams(rotate=False) (as the sky-pairs recipe does)"
            )
            raise TuneError(msg)
        if self.pooling == "pairs" and self.dim:
            msg = (
                f"TuneRecipe.dim = {self.dim} with pairs pooling: its blocks of pairs by direction "
                "must stay apart (a rotated tile permutes them), so use dim = 0"
            )
            raise TuneError(msg)
        if self.views_per_tile < 2:
            msg = f"TuneRecipe.views_per_tile = {self.views_per_tile} must be >= 2 (a pair)"
            raise TuneError(msg)
        if self.batch_size < 2 or self.min_tiles < 2:
            msg = (
                f"TuneRecipe.batch_size = {self.batch_size} and min_tiles = {self.min_tiles} "
                "must be >= 2: a contrastive batch needs other tiles as negatives"
            )
            raise TuneError(msg)
        if not 0.0 <= float(self.base_weight) < 1.0:
            msg = (
                f"TuneRecipe.base_weight = {self.base_weight!r} must be in [0, 1): the share of "
                "the base model's cosine (the head keeps the rest)"
            )
            raise TuneError(msg)
        for name in ("lr", "temperature"):
            if not float(getattr(self, name)) > 0:
                msg = f"TuneRecipe.{name} = {getattr(self, name)!r} must be > 0"
                raise TuneError(msg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (with the tuning code version).

        Returns
        -------
        dict
            The fields, the view parameters as a dict, and ``tune_version``.
        """
        out = asdict(self)
        if not self.pair_dim:  # recipes without pairs keep the format (and digest) they had
            del out["pair_dim"]
        out["views"] = self.views.to_dict()
        out["tune_version"] = TUNE_VERSION
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuneRecipe:
        """Inverse of :meth:`to_dict`.

        Parameters
        ----------
        data : dict
            A dict written by :meth:`to_dict`.

        Returns
        -------
        TuneRecipe

        Raises
        ------
        TuneError
            Unknown keys, or a recipe written by another version of the tuning code.
        """
        data = dict(data)
        version = data.pop("tune_version", TUNE_VERSION)
        if version != TUNE_VERSION:
            msg = (
                f"recipe was written by tuning version {version}, this is {TUNE_VERSION}; "
                "re-run the tune with this version"
            )
            raise TuneError(msg)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            msg = f"recipe has unknown keys {unknown}; expected only {sorted(known)}"
            raise TuneError(msg)
        if "views" in data:
            data["views"] = ViewParams(**data["views"])
        return cls(**data)

    def digest(self) -> str:
        """sha256 of :meth:`to_dict` as canonical JSON.

        Returns
        -------
        str
            64 lowercase hex digits.
        """
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def named_recipe(name: str) -> TuneRecipe:
    """A named starting recipe (:data:`RECIPES`); fields can then be replaced.

    Parameters
    ----------
    name : str
        ``"default"``: a 256-d projection of mean-pooled codes, views with zoom and rotation;
        ``"same-sky"``: 8,192 background-centred codes without projection, trained on pairs of
        views at the tile's scale shifted against each other (finding the same sky however it
        is cut); ``"sky-pairs"``: background-centred codes of position pairs at fixed offsets
        (the arrangement of what a tile holds) beside the base model's vector, on the same views
        (the same sky however it is cut, and the same kind of object). ``docs/tuning.md`` says
        what each gives.

    Returns
    -------
    TuneRecipe

    Raises
    ------
    TuneError
        An unknown name.
    """
    if name not in RECIPES:
        msg = f"no tuning recipe named {name!r}; choose one of {sorted(RECIPES)}"
        raise TuneError(msg)
    return RECIPES[name]


def _require_weights(model: EmbeddingModel) -> None:
    sha = str(getattr(model, "weights_sha256", "") or "")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        msg = (
            f"base model {model.name} has no verified pretrained weights (weights_sha256 = "
            f"{sha!r}); tuning starts from pretrained weights: load it with "
            "embeddings.load_model(name) or load_model(name, weights=FILE)"
        )
        raise TuneError(msg)


#: Views of the same-sky recipes: the whole tile shifted by up to 14 % of its side, no zoom, no
#: flip or rotation.
SHIFTED_VIEWS = ViewParams(crop_min=1.0, crop_max=1.0, shift_max=0.14, rotate=False)
#: Named starting recipes (:func:`named_recipe`).
RECIPES: dict[str, TuneRecipe] = {
    "default": TuneRecipe(),
    "same-sky": TuneRecipe(
        cut=4,
        hidden=8192,
        dim=0,
        pooling="centred",
        lr=1e-4,
        batch_size=32,
        views=SHIFTED_VIEWS,
    ),
    "sky-pairs": TuneRecipe(
        cut=4,
        hidden=2048,
        dim=0,
        pooling="pairs",
        pair_dim=512,
        base_weight=0.65,
        lr=1e-4,
        batch_size=32,
        views=SHIFTED_VIEWS,
    ),
}


def build_tuned_net(model: EmbeddingModel, recipe: TuneRecipe) -> TunedNet:
    """The :class:`TunedNet` of ``recipe`` on ``model``'s encoder, head seeded by ``recipe.seed``.

    Raises
    ------
    TuneError
        If ``model`` has no verified weights, or its network has no ``blocks[recipe.cut]``.
    """
    _require_weights(model)
    if isinstance(model.net, TunedNet):
        net = model.net
        have = (
            net.cut,
            net.head.hidden,
            net.head.dim,
            net.base_weight,
            net.head.pooling,
            net.head.pair_dim,
        )
        want = _shape(recipe)
        if have != want:
            msg = (
                f"tuned model {model.name} has cut/hidden/dim/base_weight/pooling/pair_dim "
                f"{'/'.join(map(str, have))}, the recipe asks for {'/'.join(map(str, want))}; "
                "use a recipe of the same shape"
            )
            raise TuneError(msg)
        return copy.deepcopy(net)
    base = model.net
    blocks = getattr(base, "blocks", None)
    if blocks is None or not hasattr(base, "conv_stem") or recipe.cut >= len(blocks):
        n = len(blocks) if blocks is not None else 0
        msg = (
            f"model {model.name} has {n} encoder blocks; recipe cut = {recipe.cut} needs an "
            "EfficientNet-family network with at least cut + 1 blocks"
        )
        raise TuneError(msg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = TunedNet(base, *_shape(recipe))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _shape(recipe: TuneRecipe) -> tuple:
    """What fixes a tuned network's tensors: (cut, hidden, dim, base_weight, pooling, pair_dim),
    in the order :class:`TunedNet` takes them after the base network."""
    return (
        recipe.cut,
        recipe.hidden,
        recipe.dim,
        float(recipe.base_weight),
        recipe.pooling,
        recipe.pair_dim,
    )


def _head_state(net: TunedNet) -> dict[str, np.ndarray]:
    return {
        k: v.detach().numpy().astype(np.float32, copy=True)
        for k, v in net.head.state_dict().items()
    }


def trainable_state(model: EmbeddingModel, recipe: TuneRecipe) -> dict[str, np.ndarray]:
    """The float32 tensors that tuning trains, at their initial values (the first global weights).

    For a base model these are the freshly initialised head of ``recipe`` (seeded by
    ``recipe.seed``); for an already tuned model, its current head.

    Parameters
    ----------
    model : EmbeddingModel
        The model to tune, with verified weights.
    recipe : TuneRecipe
        What is trained and how.

    Returns
    -------
    dict of str to numpy.ndarray (float32)

    Raises
    ------
    TuneError
        If the model has no verified weights or does not fit the recipe.
    """
    if isinstance(model.net, TunedNet):
        _require_weights(model)
        return _head_state(model.net)
    return _head_state(build_tuned_net(model, recipe))


def check_delta(delta: dict[str, np.ndarray], like: dict[str, np.ndarray]) -> None:
    """Check that a weight state or delta has exactly the tensors of ``like``, all finite.

    Parameters
    ----------
    delta : dict of str to numpy.ndarray
        Weights or a weight delta from a training unit (untrusted).
    like : dict of str to numpy.ndarray
        The reference state (:func:`trainable_state`): names, shapes and dtype (float32).

    Raises
    ------
    TuneError
        Not a dict of arrays, missing or extra tensor names, another shape or dtype, or NaN/inf.
    """
    if not isinstance(delta, dict):
        msg = f"a delta must be a dict of float32 arrays, got {type(delta).__name__}"
        raise TuneError(msg)
    missing, extra = sorted(set(like) - set(delta)), sorted(set(delta) - set(like))
    if missing or extra:
        msg = (
            f"delta tensors do not match the trained state: missing {missing[:5]}, unexpected "
            f"{extra[:5]}; it was made for another recipe or model"
        )
        raise TuneError(msg)
    for name, ref in like.items():
        value = delta[name]
        if not isinstance(value, np.ndarray):
            msg = f"delta tensor {name!r} is a {type(value).__name__}, expected a numpy array"
            raise TuneError(msg)
        if value.dtype != np.float32 or value.shape != ref.shape:
            msg = (
                f"delta tensor {name!r} has dtype {value.dtype} and shape {value.shape}, "
                f"expected float32 {ref.shape}"
            )
            raise TuneError(msg)
        if not np.isfinite(value).all():
            bad = int((~np.isfinite(value)).sum())
            msg = f"delta tensor {name!r} holds {bad} NaN/inf value(s); the unit is rejected"
            raise TuneError(msg)


def _infonce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    logits = z1 @ z2.T / temperature
    target = torch.arange(z1.shape[0])
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _cached_net(model: EmbeddingModel, recipe: TuneRecipe) -> TunedNet:
    cache = model.__dict__.setdefault("_tune_nets", {})
    key = _shape(recipe)
    if key not in cache:
        cache[key] = build_tuned_net(model, recipe)
    return cache[key]


def encode_views(
    net: TunedNet, model: EmbeddingModel, views: torch.Tensor, batch: int = 32
) -> torch.Tensor:
    """Frozen encoder feature maps ``(M, C, h, w)`` of views ``(M, S, S)`` in [0, 1]."""
    from embeddings._embed import preprocess

    out = []
    with torch.no_grad():
        for start in range(0, views.shape[0], batch):
            x = preprocess(model, views[start : start + batch])
            out.append(net.forward_features(x.contiguous()))
    return torch.cat(out)


def local_steps(
    model: EmbeddingModel,
    state: dict[str, np.ndarray],
    tiles: np.ndarray,
    recipe: TuneRecipe,
    *,
    seed: int,
    steps: int,
    progress: Callable[[int], object] | None = None,
) -> dict[str, np.ndarray]:
    """``steps`` deterministic optimizer steps of the head from ``state`` on ``tiles``.

    Parameters
    ----------
    model : EmbeddingModel
        The base model (its encoder is frozen; its weights must be verified pretrained ones).
    state : dict of str to numpy.ndarray
        Current global weights (:func:`trainable_state` layout).
    tiles : numpy.ndarray, shape (N, 224, 224), float32, values in [0, 1]
        The shard's tiles, as :meth:`tiling.TileStore.read_unit` returns them.
    recipe : TuneRecipe
    seed : int
        Seed of this unit's views and batches (derive it from the round and shard).
    steps : int
        Optimizer steps (K).
    progress : callable or None
        Called as ``progress(step)`` after each step.

    Returns
    -------
    dict of str to numpy.ndarray (float32)
        The weights after the steps (same names and shapes as ``state``).

    Raises
    ------
    TuneError
        Too few tiles, ``steps`` < 1, a base without weights, or a bad ``state``.
    TileInputError
        Tiles of the wrong dtype, shape or range.
    """
    tiles = validate_tiles(tiles, model.spec.channels, size=model.spec.input_size[-1])
    if tiles.ndim != 3:
        msg = f"tuning takes single-band tiles (N, S, S), got shape {tiles.shape}"
        raise TuneError(msg)
    if tiles.shape[0] < recipe.min_tiles:
        msg = (
            f"{tiles.shape[0]} tile(s) are too few to tune on: a unit needs at least "
            f"{recipe.min_tiles} (recipe.min_tiles) so that a batch has other tiles as "
            "negatives; tile more mosaics or use larger shards"
        )
        raise TuneError(msg)
    if not isinstance(steps, int) or steps < 1:
        msg = f"steps = {steps!r} must be a positive integer"
        raise TuneError(msg)
    net = _cached_net(model, recipe)
    check_delta(state, _head_state(net))
    head = net.head
    head.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    gen = torch.Generator().manual_seed(int(seed))
    n, v = tiles.shape[0], recipe.views_per_tile
    views = make_views(torch.from_numpy(tiles), v, recipe.views, gen)
    bank = encode_views(net, model, views.flatten(0, 1))
    bank = bank.view(n, v, *bank.shape[1:])
    batch = min(recipe.batch_size, n)
    params = list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    head.train()
    try:
        for step in range(steps):
            idx = torch.randperm(n, generator=gen)[:batch]
            first = torch.randint(0, v, (batch,), generator=gen)
            second = (first + torch.randint(1, v, (batch,), generator=gen)) % v
            loss = _infonce(head(bank[idx, first]), head(bank[idx, second]), recipe.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress is not None:
                progress(step + 1)
    finally:
        head.eval()
        for p in params:
            p.requires_grad_(False)
    return _head_state(net)

"""Embedding tiles: validation, the 8 augmentations, preprocessing, batched inference, pooling."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from embeddings._model import EmbeddingModel
from embeddings.errors import TileInputError
from tiling.augment import AUGMENTATIONS

__all__ = [
    "NORM_TOLERANCE",
    "embed_tiles",
    "network_input",
    "norm_error",
    "preprocess",
    "stage_input",
    "validate_tiles",
]

N_AUG = len(AUGMENTATIONS)
#: Tolerance on the [0, 1] range of stretched tiles (rounding of the stretch).
RANGE_TOL = 1e-3
#: Largest ``|norm - 1|`` of a stored vector: the grid refuses a replica beyond it and the
#: catalogue refuses to build from one (the one tolerance both use).
NORM_TOLERANCE = 1e-3


#: Rows whose float64 norms are computed at a time (bounds the temporary memory).
_NORM_BLOCK = 65_536


def norm_error(vectors: np.ndarray) -> np.ndarray:
    """``|norm - 1|`` of each row of ``vectors``, computed in float64.

    Parameters
    ----------
    vectors : numpy.ndarray, shape (N, D)

    Returns
    -------
    numpy.ndarray of float64, shape (N,)
        Compare with :data:`NORM_TOLERANCE`.
    """
    x = np.asarray(vectors)
    if x.ndim != 2:
        return np.abs(np.linalg.norm(np.asarray(x, dtype=np.float64), axis=1) - 1.0)
    out = np.empty(len(x), dtype=np.float64)
    for a in range(0, len(x), _NORM_BLOCK):  # float64 copies of a block at a time, not of all
        out[a : a + _NORM_BLOCK] = np.linalg.norm(
            np.asarray(x[a : a + _NORM_BLOCK], dtype=np.float64), axis=1
        )
    return np.abs(out - 1.0)


def validate_tiles(tiles: object, channels: int, *, size: int | None = None) -> np.ndarray:
    """Check a batch of tiles and return it as a C-contiguous float32 array.

    Parameters
    ----------
    tiles : numpy.ndarray, shape (N, H, W) or (N, C, H, W), float32, values in [0, 1]
        Single-band tiles, or ``C == channels`` aligned bands (mapped to the network's channels in
        order, e.g. three filters as RGB). ``H == W``.
    channels : int
        Channels the network expects.
    size : int or None
        Required tile side in pixels, if any.

    Returns
    -------
    numpy.ndarray of float32
        ``tiles`` itself, or a C-contiguous copy when it was not contiguous.

    Raises
    ------
    TileInputError
        Not an array, wrong dtype, wrong shape, non-finite values, or values outside [0, 1].
    """
    if not isinstance(tiles, np.ndarray):
        msg = f"tiles must be a numpy array of float32, got {type(tiles).__name__}"
        raise TileInputError(msg)
    if tiles.dtype != np.float32:
        msg = (
            f"tiles have dtype {tiles.dtype}, expected float32 (stretched to [0, 1]); "
            "convert with tiles.astype(np.float32) if the values are already stretched"
        )
        raise TileInputError(msg)
    ok_ndim = tiles.ndim == 3 or (tiles.ndim == 4 and tiles.shape[1] == channels)
    if not ok_ndim or tiles.shape[-1] != tiles.shape[-2] or (size and tiles.shape[-1] != size):
        side = size or "S"
        msg = (
            f"tiles have shape {tiles.shape}, expected (N, {side}, {side}) single-band tiles or "
            f"(N, {channels}, {side}, {side}) aligned bands"
        )
        raise TileInputError(msg)
    if tiles.shape[0] == 0:
        return np.ascontiguousarray(tiles)
    finite = np.isfinite(tiles)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(tiles.shape[0], -1).all(axis=1))
        msg = (
            f"{len(bad)} tile(s) contain NaN or infinite values (first at index {int(bad[0])}); "
            "fill masked pixels (e.g. with 0) before embedding"
        )
        raise TileInputError(msg)
    lo, hi = float(tiles.min()), float(tiles.max())
    if lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
        msg = (
            f"tile values span [{lo:.4g}, {hi:.4g}], expected [0, 1]; embed stretched tiles "
            "(TileStore.read / read_unit return them stretched)"
        )
        raise TileInputError(msg)
    return np.ascontiguousarray(tiles)


def _augment_torch(x: torch.Tensor) -> torch.Tensor:
    """(n, [C,] H, W) -> (n * 8, [C,] H, W), augmentation-major within each tile.

    Matches :func:`tiling.augment.augment`: index i is ``rot90(tile if i < 4 else fliplr(tile),
    i % 4)`` over the last two axes.
    """
    flipped = torch.flip(x, dims=(-1,))
    views = [torch.rot90(src, k, dims=(-2, -1)) for src in (x, flipped) for k in range(4)]
    return torch.stack(views, dim=1).flatten(0, 1)


def preprocess(model: EmbeddingModel, images: torch.Tensor) -> torch.Tensor:
    """Turn images in [0, 1] into the network's normalised input.

    Parameters
    ----------
    model : EmbeddingModel
    images : torch.Tensor, shape (B, H, W) or (B, C, H, W), float32, values in [0, 1]

    Returns
    -------
    torch.Tensor, shape (B, C, h, w) with (C, h, w) the model's ``input_size``
        Single-band images are replicated to every channel; resized (model's interpolation,
        antialiased) only when the size differs; normalised ``(x - mean) / std``.
    """
    spec = model.spec
    c, h, w = spec.input_size
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.shape[-2:] != (h, w):
        mode = spec.interpolation if spec.interpolation in ("bilinear", "bicubic") else "bilinear"
        images = F.interpolate(images, size=(h, w), mode=mode, antialias=True, align_corners=False)
    memory = torch.channels_last if model.channels_last else torch.contiguous_format
    out = torch.empty((images.shape[0], c, h, w), dtype=torch.float32, memory_format=memory)
    if images.shape[1] == 1 and len(set(spec.mean)) == 1 and len(set(spec.std)) == 1:
        # one band, same normalisation on every channel: normalise once, then replicate
        band = (images - spec.mean[0]) / spec.std[0]
        out.copy_(band.expand(-1, c, -1, -1))
        return out
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, c, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, c, 1, 1)
    torch.sub(images.expand(-1, c, -1, -1), mean, out=out)
    out.div_(std)
    return out


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if n is None or n == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def embed_tiles(
    model: EmbeddingModel,
    tiles: np.ndarray,
    *,
    return_augmentations: bool = False,
    progress: Callable[[int], object] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Embed tiles into unit vectors pooled over the 8 flips/rotations.

    Each tile's 8 flips/rotations (:data:`tiling.AUGMENTATIONS`) are embedded; the tile's vector
    is the mean of the 8 L2-normalised vectors, L2-normalised again, so a rotated or flipped tile
    gets the same vector. The one exception is a tuned model with ``"pairs"`` pooling, whose
    output holds pairs of positions by direction: its 8 outputs are first brought into the
    tile's own frame (:meth:`embeddings._tunednet.TunedNet.augmentation_order`), so that part of
    its vector turns with the tile (see ``docs/tuning.md``). Deterministic for the same inputs,
    weights, configuration and threads.

    Parameters
    ----------
    model : EmbeddingModel
        From :func:`embeddings.load_model`.
    tiles : numpy.ndarray, shape (N, 224, 224) or (N, C, 224, 224), float32, values in [0, 1]
        Stretched tiles (or C aligned bands).
    return_augmentations : bool
        Also return the per-augmentation unit vectors (for a ``"pairs"`` model, each brought
        into the tile's own frame).
    progress : callable or None
        Called as ``progress(n_tiles_done)`` after each batch.

    Returns
    -------
    vectors : numpy.ndarray, shape (N, D), float32
        Unit-norm pooled vectors (``D = model.dim``); shape (0, D) for an empty batch.
    per_augmentation : numpy.ndarray, shape (N, 8, D), float32
        Only with ``return_augmentations``.

    Raises
    ------
    TileInputError
        Wrong type, dtype or shape, NaN/inf values, or values outside [0, 1].
    """
    tiles = validate_tiles(tiles, model.spec.channels)
    n = tiles.shape[0]
    pooled = np.empty((n, model.dim), dtype=np.float32)
    per_aug = np.empty((n, N_AUG, model.dim), dtype=np.float32) if return_augmentations else None
    step = max(1, model.config.batch_size // N_AUG)
    backend = model.backend
    c, h, w = model.spec.input_size
    # converted runtimes take tiles at the input size and do augmentation and normalisation
    # inside their graph; otherwise (torch, resizing) they are done here
    whole_stage = hasattr(backend, "views") and tiles.shape[-2:] == (h, w)
    source = torch.from_numpy(tiles)
    order = getattr(model.net, "augmentation_order", None)
    order = order() if order is not None else None
    with _threads(model.config.threads), torch.inference_mode():
        for start in range(0, n, step):
            chunk = source[start : start + step]
            m = chunk.shape[0]
            if whole_stage:
                x = chunk.numpy()
                x = np.broadcast_to(x[:, None], (m, c, h, w)) if x.ndim == 3 else x
                feats = backend.views(x)
            else:
                feats = model.features(preprocess(model, _augment_torch(chunk)))
            feats = feats.view(m, N_AUG, -1)
            if order is not None:  # each augmentation's output brought into the tile's frame
                feats = feats.gather(2, order.expand(m, -1, -1))
            vecs = F.normalize(feats, dim=-1)
            pooled[start : start + m] = F.normalize(vecs.mean(dim=1), dim=-1).numpy()
            if per_aug is not None:
                per_aug[start : start + m] = vecs.numpy()
            if progress is not None:
                progress(start + m)
    if per_aug is not None:
        return pooled, per_aug
    return pooled


def network_input(model: EmbeddingModel, tiles: np.ndarray) -> np.ndarray:
    """The normalised network input of ``tiles``' 8 augmentations (augmentation-minor).

    Returns
    -------
    numpy.ndarray, shape (8 N, C, h, w), float32, C-contiguous
    """
    tiles = validate_tiles(tiles, model.spec.channels)
    with torch.inference_mode():
        images = preprocess(model, _augment_torch(torch.from_numpy(tiles)))
    return np.ascontiguousarray(images.numpy())


def stage_input(model: EmbeddingModel, tiles: np.ndarray) -> np.ndarray:
    """Tiles as the converted stage graph takes them: ``(N, C, h, w)`` float32 in [0, 1]."""
    tiles = validate_tiles(tiles, model.spec.channels, size=model.spec.input_size[-1])
    if tiles.ndim == 3:
        tiles = np.repeat(tiles[:, None], model.spec.channels, axis=1)
    return np.ascontiguousarray(tiles)

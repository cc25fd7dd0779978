"""The 8 symmetries of the square (dihedral group D4) applied to tiles.

Augmentation ``i`` (0..7) rotates the tile by ``i % 4`` quarter turns (counter-clockwise, as
:func:`numpy.rot90`), after mirroring it left-right when ``i >= 4``. Index 0 is the identity.
They are applied on read and never stored, so every augmented tile is reproducible exactly.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AUGMENTATIONS", "augment", "augment_all"]

#: Names of the 8 augmentations, in index order (recorded in stores and provenance).
AUGMENTATIONS: tuple[str, ...] = (
    "identity",
    "rot90",
    "rot180",
    "rot270",
    "flip_lr",
    "flip_lr+rot90",
    "flip_lr+rot180",
    "flip_lr+rot270",
)


def augment(tile: np.ndarray, index: int) -> np.ndarray:
    """Return augmentation ``index`` of ``tile`` (a view where possible).

    Parameters
    ----------
    tile : numpy.ndarray, shape (..., H, W)
        One tile or a batch of tiles; the last two axes are rotated.
    index : int
        Augmentation index, 0 to 7 (see :data:`AUGMENTATIONS`).

    Returns
    -------
    numpy.ndarray, shape (..., W, H) for odd quarter turns, else (..., H, W)
        The augmented tile(s), usually a view of ``tile``.

    Raises
    ------
    ValueError
        If ``index`` is outside 0..7.
    """
    if not 0 <= index < len(AUGMENTATIONS):
        msg = f"augmentation index {index!r} is out of range; expected 0..{len(AUGMENTATIONS) - 1}"
        raise ValueError(msg)
    out = tile[..., :, ::-1] if index >= 4 else tile
    return np.rot90(out, index % 4, axes=(-2, -1))


def augment_all(tiles: np.ndarray) -> np.ndarray:
    """Stack the 8 augmentations of a batch.

    Parameters
    ----------
    tiles : numpy.ndarray, shape (N, H, W)

    Returns
    -------
    numpy.ndarray, shape (N, 8, H, W)
        Contiguous copy; ``out[n, i]`` is ``augment(tiles[n], i)``.
    """
    return np.ascontiguousarray(np.stack([augment(tiles, i) for i in range(8)], axis=1))

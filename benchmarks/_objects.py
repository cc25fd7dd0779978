"""Objects to inject into real tiles for the search-quality benchmark: real galaxies and
synthetic arcs, rings, edge-on discs, mergers and trails.

Every object is a float32 ``(224, 224)`` image of added brightness in stretched units, drawn
from a seeded generator; :func:`inject` adds it to a real tile and clips to [0, 1].
"""

from __future__ import annotations

import numpy as np

__all__ = ["KINDS", "galaxy_stamps", "inject", "make_object"]

SIZE = 224
#: The kinds of injected object (``"galaxy"`` is a real galaxy cut from one image).
KINDS = ("galaxy", "arc", "ring", "edge-on disc", "merger", "trail")


def galaxy_stamps(image: np.ndarray, n: int = 16) -> list[np.ndarray]:
    """The ``n`` largest bright sources of a real image, as background-free stamps peaking at 1.

    Parameters
    ----------
    image : numpy.ndarray, shape (H, W), values in [0, 1]
        A stretched real image (e.g. the Hubble Deep Field).
    """
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(image.astype(np.float64), 1.5)
    background = np.median(smooth)
    mask = smooth > background + 4 * np.std(smooth[smooth < np.percentile(smooth, 90)])
    labels, count = ndimage.label(mask)
    sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
    stamps = []
    for label in np.argsort(-sizes)[: 3 * n] + 1:
        ys, xs = np.nonzero(labels == label)
        half = int(np.clip(1.5 * max(np.ptp(ys), np.ptp(xs)) / 2 + 6, 12, 70))
        cy, cx = int(ys.mean()), int(xs.mean())
        y0, x0 = cy - half, cx - half
        if y0 < 0 or x0 < 0 or y0 + 2 * half > image.shape[0] or x0 + 2 * half > image.shape[1]:
            continue
        stamp = image[y0 : y0 + 2 * half, x0 : x0 + 2 * half].astype(np.float64) - background
        stamp = np.clip(stamp, 0, None)
        if stamp.max() <= 0:
            continue
        stamps.append((stamp / stamp.max()).astype(np.float32))
        if len(stamps) == n:
            break
    return stamps


def _frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to a random centre near the middle of the tile, randomly rotated."""
    cy, cx = rng.uniform(SIZE * 0.35, SIZE * 0.65, size=2)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    t = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    return u, v


def make_object(kind: str, rng: np.random.Generator, stamps: list[np.ndarray]) -> np.ndarray:
    """One object of ``kind`` (one of :data:`KINDS`) as added brightness, float32 (224, 224)."""
    amp = rng.uniform(0.5, 0.8)
    u, v = _frame(rng)
    if kind == "galaxy":
        stamp = stamps[int(rng.integers(len(stamps)))]
        stamp = np.rot90(stamp if rng.random() < 0.5 else stamp[:, ::-1], int(rng.integers(4)))
        h, w = stamp.shape
        out = np.zeros((SIZE, SIZE))
        y0 = int(rng.integers(SIZE // 4, SIZE - SIZE // 4 - h // 2)) - h // 4
        x0 = int(rng.integers(SIZE // 4, SIZE - SIZE // 4 - w // 2)) - w // 4
        y0, x0 = max(0, min(SIZE - h, y0)), max(0, min(SIZE - w, x0))
        out[y0 : y0 + h, x0 : x0 + w] = stamp
        img = out
    elif kind == "arc":
        radius, width = rng.uniform(35, 70), rng.uniform(1.5, 3.0)
        r, phi = np.hypot(u, v + radius), np.arctan2(u, v + radius)
        span = rng.uniform(0.5, 1.0)
        img = np.exp(-0.5 * ((r - radius) / width) ** 2) * np.exp(-0.5 * (phi / span) ** 8)
    elif kind == "ring":
        radius, width = rng.uniform(18, 40), rng.uniform(1.5, 3.0)
        r = np.hypot(u, v)
        img = np.exp(-0.5 * ((r - radius) / width) ** 2) + 0.8 * np.exp(-0.5 * (r / 3.0) ** 2)
    elif kind == "edge-on disc":
        length = rng.uniform(25, 50)
        thick = length / rng.uniform(6, 10)
        img = np.exp(-np.abs(u) / (length / 3)) / np.cosh(v / thick) ** 2
        img *= np.abs(u) < length * 1.5
    elif kind == "merger":
        sep = rng.uniform(14, 30)
        s1, s2 = rng.uniform(3, 6), rng.uniform(2.5, 5)
        a = np.exp(-np.hypot(u - sep / 2, v) / s1)
        b = 0.8 * np.exp(-np.hypot(u + sep / 2, v) / s2)
        r, phi = np.hypot(u + sep / 2, v - sep), np.arctan2(u + sep / 2, v - sep)
        tail = 0.35 * np.exp(-0.5 * ((r - sep) / 3.0) ** 2) * (np.abs(phi - 2.0) < 1.0)
        img = a + b + tail
    elif kind == "trail":
        width = rng.uniform(0.8, 1.8)
        img = np.exp(-0.5 * (v / width) ** 2) * rng.uniform(0.5, 0.9)
    else:
        msg = f"unknown object kind {kind!r}; choose one of {KINDS}"
        raise ValueError(msg)
    img = img / max(float(img.max()), 1e-12)
    return (amp * img).astype(np.float32)


def inject(tile: np.ndarray, obj: np.ndarray) -> np.ndarray:
    """``tile`` with ``obj`` added, clipped to [0, 1] (float32)."""
    return np.clip(tile + obj, 0.0, 1.0).astype(np.float32)

"""Fixtures of the embedding tests: the default model is loaded once per session."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def model():
    """The default model (tf_efficientnet_lite0, genuine ImageNet weights), loaded once."""
    from embeddings import load_model

    return load_model()


@pytest.fixture(scope="session")
def tiles() -> np.ndarray:
    """Three small seeded synthetic tiles in [0, 1]: sources on noise, not symmetric."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:224, 0:224]
    out = np.empty((3, 224, 224), dtype=np.float32)
    for i in range(3):
        img = rng.normal(0.1, 0.02, size=(224, 224))
        for _ in range(6):
            x, y = rng.uniform(20, 204, size=2)
            s = rng.uniform(2, 12)
            img += rng.uniform(0.2, 0.8) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s**2))
        out[i] = np.clip(img, 0, 1)
    return out

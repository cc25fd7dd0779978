"""Fixtures of the grid tests: a small tile store shared by the module, process clean-up."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_tile_store(tmp_path_factory):
    """A synthetic tile store of 3 work units of 1 tile each (one zoom)."""
    from grid._selftest import synthetic_tile_store

    return synthetic_tile_store(tmp_path_factory.mktemp("grid-tiles"), units=3, unit_size=1)

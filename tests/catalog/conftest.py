"""Fixtures of the catalogue tests.

The small tile stores and the two-version catalogue cut from the real HST files (``model``,
``stores``, ``catalogue_dir``, ``cat``) live in ``tests/conftest.py``, so that the catalogue and
the service tests share one session-scoped copy of them.
"""

from __future__ import annotations

from tests.conftest import ABELL, HDFS, NGC104

__all__ = ["ABELL", "HDFS", "NGC104"]

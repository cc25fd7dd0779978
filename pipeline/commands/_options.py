"""Argument types shared by several sub-commands."""

from __future__ import annotations

import argparse

__all__ = ["zooms"]


def zooms(text: str) -> tuple[int, ...]:
    """Parse ``--zooms 1,2,4`` into binning factors."""
    try:
        factors = tuple(int(z) for z in text.replace(" ", "").split(",") if z)
    except ValueError:
        msg = f"--zooms {text!r}: expected comma-separated binning factors, e.g. 1,2,4"
        raise argparse.ArgumentTypeError(msg) from None
    if not factors:
        msg = "--zooms needs at least one binning factor, e.g. 1"
        raise argparse.ArgumentTypeError(msg)
    return factors

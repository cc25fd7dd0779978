"""Argument types shared by several sub-commands."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

__all__ = ["add_runtime_options", "runtime_environment", "zooms"]

# the values of embeddings.RUNTIMES / PRECISIONS (spelled here so `hubcat --help` imports no torch)
RUNTIME_CHOICES = ("auto", "openvino", "torch", "onnxruntime")
PRECISION_CHOICES = ("fp32", "bf16", "int8")


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


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--runtime`` and ``--precision`` (the embedding stage's inference runtime)."""
    parser.add_argument(
        "--runtime",
        choices=RUNTIME_CHOICES,
        help="embedding inference runtime (default: auto = OpenVINO where installed, else "
        "torch; or $HUBCAT_EMBED_RUNTIME)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        help="embedding arithmetic (default fp32; bf16 needs native AMX/AVX512-BF16 and makes "
        "other vectors, recorded in the digest; or $HUBCAT_EMBED_PRECISION)",
    )


@contextlib.contextmanager
def runtime_environment(args: argparse.Namespace) -> Iterator[str]:
    """Make ``--runtime``/``--precision`` the embedding defaults while a command runs.

    They are set as ``HUBCAT_EMBED_RUNTIME`` / ``HUBCAT_EMBED_PRECISION`` so that every
    :class:`embeddings.EmbedConfig` of this process, and of the worker processes it starts
    (which inherit the environment), uses them; the environment is restored afterwards. Yields
    the numerical class they resolve to here.

    Raises
    ------
    embeddings.RuntimeUnavailableError, embeddings.PrecisionUnavailableError
        Before any work is done, when the choice cannot run on this machine.
    """
    from embeddings import EmbedConfig, numerical_class
    from embeddings._config import ENV_PRECISION, ENV_RUNTIME

    chosen = {
        ENV_RUNTIME: getattr(args, "runtime", None),
        ENV_PRECISION: getattr(args, "precision", None),
    }
    saved = {k: os.environ.get(k) for k in chosen}
    try:
        for key, value in chosen.items():
            if value:
                os.environ[key] = value
        yield numerical_class(EmbedConfig())
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

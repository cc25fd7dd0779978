"""Options and argument types shared by several sub-commands: one name and one meaning each.

The conventions of every ``hubcat`` command:

- ``--json``: a flag; the command prints exactly one JSON object on stdout (and no progress
  bars) instead of its text summary;
- ``--no-progress``: no progress bars (they go to stderr);
- ``--signing-key FILE``: the operator's Ed25519 key (``--sign-key`` is a deprecated alias);
- ``--grid-dir DIR``: the grid directory of ``hubcat grid init`` (default ``$HUBCAT_GRID_DIR``),
  whose CA and operator certificate secure a ``tls://`` scheduler address;
- ``--catalogue-version N``: an earlier catalogue version;
- angles carry their unit (``--cone 30arcsec``); positions are ICRS degrees (``--ra/--dec``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

__all__ = [
    "GRID_DIR_ENV",
    "add_catalogue_version",
    "add_grid_dir",
    "add_json",
    "add_progress",
    "add_runtime_options",
    "add_signing_key",
    "angle",
    "runtime_environment",
    "zooms",
]

#: Environment variable that gives the default of ``--grid-dir``.
GRID_DIR_ENV = "HUBCAT_GRID_DIR"

# the values of embeddings.RUNTIMES / PRECISIONS (spelled here so `hubcat --help` imports no torch)
RUNTIME_CHOICES = ("auto", "openvino", "torch", "onnxruntime")
PRECISION_CHOICES = ("fp32", "bf16", "int8")

_SIGNING_KEY_HELP = (
    "operator's Ed25519 key that signs the catalogue's checkpoint "
    "(default: $HUBCAT_SIGNING_KEY or ~/.hubcat/hubcat.key, made on first use)"
)


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


def angle(text: str):
    """Parse an angle with its unit (``30arcsec``, ``"30 arcsec"``, ``0.5deg``, ``2arcmin``).

    A bare number is refused, as in the Python API (:func:`catalog._query.to_angle`).
    """
    from catalog import to_angle
    from catalog.errors import QueryError

    try:
        return to_angle(text.strip(), what="angle")
    except QueryError:
        msg = (
            f"{text!r} is not an angle with a unit; write e.g. 30arcsec, 1.5arcmin or 0.01deg "
            "(a bare number is refused: hubcat never guesses an angle's unit)"
        )
        raise argparse.ArgumentTypeError(msg) from None


def add_json(parser: argparse.ArgumentParser, what: str = "the summary") -> None:
    """``--json``: print ``what`` as one JSON object on stdout (no progress bars)."""
    parser.add_argument(
        "--json", action="store_true", help=f"print {what} as one JSON object on stdout"
    )


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_signing_key(parser: argparse.ArgumentParser, *, default_made: bool = True) -> None:
    """``--signing-key FILE`` (``--sign-key`` kept as a hidden, deprecated alias)."""
    help_text = (
        _SIGNING_KEY_HELP if default_made else "operator's Ed25519 key that signs the checkpoint"
    )
    parser.add_argument("--signing-key", metavar="FILE", help=help_text)
    parser.add_argument("--sign-key", dest="signing_key", metavar="FILE", help=argparse.SUPPRESS)


def add_grid_dir(parser: argparse.ArgumentParser) -> None:
    """``--grid-dir DIR`` (default ``$HUBCAT_GRID_DIR``): TLS security for a ``tls://`` grid."""
    parser.add_argument(
        "--grid-dir",
        metavar="DIR",
        default=os.environ.get(GRID_DIR_ENV) or None,
        help=(
            "grid directory made by `hubcat grid init` (its CA and operator certificate are used "
            f"to reach a tls:// --scheduler; default: ${GRID_DIR_ENV})"
        ),
    )


def add_catalogue_version(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """``--catalogue-version N``; ``aliases`` are older spellings kept hidden."""
    parser.add_argument(
        "--catalogue-version",
        type=int,
        metavar="N",
        help="use catalogue version N (default: the latest)",
    )
    for alias in aliases:
        parser.add_argument(
            alias, dest="catalogue_version", type=int, metavar="N", help=argparse.SUPPRESS
        )


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
    from embeddings import ENV_PRECISION, ENV_RUNTIME, EmbedConfig, numerical_class

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

"""What verification reports: inclusion proofs, consistency checks, failures and the report."""

from __future__ import annotations

from dataclasses import dataclass, field

from catalog.provenance._merkle import hash_leaf, inclusion_failure
from catalog.provenance.errors import VerificationError

__all__ = ["ConsistencyCheck", "Failure", "InclusionProof", "VerificationReport"]


@dataclass
class InclusionProof:
    """The inclusion proof of one tile's leaf in the signed tree.

    Attributes
    ----------
    tile_id : str
    leaf_index : int
        0-based position of the leaf.
    tree_size : int
    leaf : str
        The leaf itself (RFC 8785 JSON of the tile's record).
    leaf_hash : str
        ``SHA-256(0x00 || leaf)``, hex.
    path : list of str
        Sibling hashes, leaf-to-root order, hex (``ceil(log2(tree_size))`` at most).
    root : str
        Root of the signed checkpoint, hex.
    checkpoint : str
        The signed checkpoint the root comes from.
    """

    tile_id: str
    leaf_index: int
    tree_size: int
    leaf: str
    leaf_hash: str
    path: list[str]
    root: str
    checkpoint: str = ""

    def verify(self) -> bool:
        """Re-run RFC 9162's inclusion check (leaf -> leaf hash -> path -> root).

        Returns
        -------
        bool
            True when ``SHA-256(0x00 || leaf)`` equals :attr:`leaf_hash` and hashing it up
            :attr:`path` at :attr:`leaf_index` of a tree of :attr:`tree_size` leaves gives
            :attr:`root`; False otherwise (a failed proof is a result, not an error).
        """
        if hash_leaf(self.leaf.encode()).hex() != self.leaf_hash:
            return False
        return (
            inclusion_failure(self.leaf_hash, self.leaf_index, self.tree_size, self.path, self.root)
            is None
        )

    def to_dict(self) -> dict:
        """JSON-ready dictionary.

        Returns
        -------
        dict
            ``tile_id``, ``leaf_index``, ``tree_size``, ``leaf``, ``leaf_hash``,
            ``inclusion_path`` (the :attr:`path`, a new list), ``root`` and ``checkpoint``;
            hashes as hex strings.
        """
        return {
            "tile_id": self.tile_id,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf": self.leaf,
            "leaf_hash": self.leaf_hash,
            "inclusion_path": list(self.path),
            "root": self.root,
            "checkpoint": self.checkpoint,
        }

    def __str__(self) -> str:
        lines = [
            f"inclusion proof of tile {self.tile_id}: leaf {self.leaf_index} of {self.tree_size}",
            f"  leaf      {self.leaf}",
            f"  leaf hash {self.leaf_hash}",
        ]
        lines += [f"  path[{i:2d}]  {h}" for i, h in enumerate(self.path)]
        lines.append(f"  root      {self.root}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:  # shown as text in notebooks
        import html

        return f"<pre>{html.escape(str(self))}</pre>"


@dataclass
class ConsistencyCheck:
    """The consistency of the catalogue with an older checkpoint.

    Attributes
    ----------
    old_size : int
        Number of leaves of the older checkpoint.
    new_size : int
        Number of leaves of the catalogue's current checkpoint.
    old_root, new_root : str
        Merkle roots of the two trees, hex.
    proof : list of str
        The RFC 9162 consistency proof between them, hex hashes.
    ok : bool
        True when the proof shows the new tree extends the old one.
    """

    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: list[str]
    ok: bool

    def to_dict(self) -> dict:
        """JSON-ready dictionary.

        Returns
        -------
        dict
            ``old_size``, ``new_size``, ``old_root``, ``new_root``, ``proof`` and ``ok``, as
            held by this check (a shallow copy).
        """
        return dict(self.__dict__)


@dataclass
class Failure:
    """One failed check: what (``tile``, ``file``, ``signature``, ...), which one, and why."""

    kind: str
    subject: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class VerificationReport:
    """Result of :func:`verify_catalogue`: what was checked, what failed, and the proofs.

    Attributes
    ----------
    catalogue : str
        URI of the catalogue.
    tree_size : int
    root : str
        Root of the checkpoint, hex.
    key : str
        The key the signature was checked with (``name+hash``), or ``""`` when unsigned.
    checks : list of str
        Checks that passed.
    failures : list of Failure
        Checks that failed, each naming the tile, file or value at fault.
    warnings : list of str
        What the verification could not establish (an unsigned log, an unpinned key).
    proof : InclusionProof or None
        For ``tile_id``.
    consistency : ConsistencyCheck or None
        For ``against``.
    """

    catalogue: str
    tree_size: int = 0
    root: str = ""
    key: str = ""
    checks: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    proof: InclusionProof | None = None
    consistency: ConsistencyCheck | None = None

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return not self.failures

    def failed(self, kind: str, subject: str, message: str) -> None:
        """Record a failed check (appends a :class:`Failure` to :attr:`failures`).

        Parameters
        ----------
        kind : str
            What failed: ``"tile"``, ``"file"``, ``"signature"``, ...; failures of kind
            ``"tile"`` are listed by :attr:`failed_tiles`.
        subject : str
            Which one: the ``tile_id``, object key or value at fault.
        message : str
            Why, in words a reader can act on (shown by :meth:`summary` and
            :meth:`raise_if_failed`).
        """
        self.failures.append(Failure(kind, subject, message))

    @property
    def failed_tiles(self) -> list[str]:
        """tile_ids named by a failure, without duplicates, in order."""
        return list(dict.fromkeys(f.subject for f in self.failures if f.kind == "tile"))

    def raise_if_failed(self) -> None:
        """Raise :class:`VerificationError` listing every failure, if there is one."""
        if self.failures:
            head = (
                f"provenance of {self.catalogue} does not verify ({len(self.failures)} failure(s))"
            )
            lines = [str(f) for f in self.failures]
            shown = lines[:20] + ([f"... and {len(lines) - 20} more"] if len(lines) > 20 else [])
            raise VerificationError(head + ":\n  " + "\n  ".join(shown), lines)

    def summary(self) -> str:
        """A few lines: the verdict, the tree, and each failure.

        Returns
        -------
        str
            Newline-separated: ``OK`` or ``FAILED`` for :attr:`catalogue`, the tree size and
            root, the signing key (or ``not signed``), then one line per passed check
            (``ok``), warning (``WARN``) and failure (``FAIL``).
        """
        verdict = "OK" if self.ok else "FAILED"
        lines = [
            f"provenance of {self.catalogue}: {verdict}",
            f"  tree size {self.tree_size}, root {self.root}",
            f"  signed by {self.key}" if self.key else "  not signed",
        ]
        lines += [f"  ok    {c}" for c in self.checks]
        lines += [f"  WARN  {w}" for w in self.warnings]
        lines += [f"  FAIL  {f}" for f in self.failures]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        """JSON-ready dictionary.

        Returns
        -------
        dict
            ``catalogue``, ``ok``, ``tree_size``, ``root``, ``key``, ``checks``, ``failures``
            (each a dict of ``kind``, ``subject``, ``message``), ``warnings``, and ``proof`` and
            ``consistency`` (their :meth:`~InclusionProof.to_dict`, or None).
        """
        return {
            "catalogue": self.catalogue,
            "ok": self.ok,
            "tree_size": self.tree_size,
            "root": self.root,
            "key": self.key,
            "checks": list(self.checks),
            "failures": [f.__dict__ for f in self.failures],
            "warnings": list(self.warnings),
            "proof": self.proof.to_dict() if self.proof else None,
            "consistency": self.consistency.to_dict() if self.consistency else None,
        }

"""An :class:`~hubcat.storage.ObjectStore` in a local folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hubcat.errors import StorageError, StoreNotFoundError
from hubcat.storage._base import ObjectStore

__all__ = ["LocalObjectStore"]


class LocalObjectStore(ObjectStore):
    """An :class:`ObjectStore` in a local folder; keys are relative file paths.

    Parameters
    ----------
    root : str or path-like
        The folder (``~`` is expanded; made absolute). It need not exist yet: the first
        :meth:`put` creates it.

    Notes
    -----
    ``put`` writes a hidden temporary file beside the target, fsyncs it and renames it into
    place, so readers never see half an object. Keys containing ``..`` raise
    :class:`~hubcat.errors.StorageError`.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    @property
    def uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        key = key.lstrip("/")
        path = (self.root / key) if key else self.root
        if ".." in Path(key).parts:
            msg = f"key {key!r} escapes the store at {self.root}; use a relative key without '..'"
            raise StorageError(msg)
        return path

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            msg = f"{path} does not exist"
            raise StoreNotFoundError(msg) from None
        except OSError as exc:
            msg = f"cannot read {path}: {exc}"
            raise StorageError(msg) from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                return fh.read(length)
        except FileNotFoundError:
            msg = f"{path} does not exist"
            raise StoreNotFoundError(msg) from None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str = "") -> Iterator[str]:
        if not self.root.exists():
            return
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if rel.startswith(prefix):
                    keys.append(rel)
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            msg = f"{self._path(key)} does not exist"
            raise StoreNotFoundError(msg) from None

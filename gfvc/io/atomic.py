"""Write a file completely or not at all: a temp file beside the target, renamed on success."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gfvc.errors import OutputError


class AtomicFile:
    """``with AtomicFile(path) as f: f.write(...)``: renamed into place only if the block ends
    without an exception; otherwise the temp file is deleted, so a failed run never leaves a
    half-written output that looks complete."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise OutputError(f"cannot write {self.path}: it is a folder")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent
            )
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._tmp = Path(tmp)
        self._f = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._f.write(data)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._f.close()
        if exc_type is None:
            try:
                os.replace(self._tmp, self.path)
                return
            except OSError as e:
                self._tmp.unlink(missing_ok=True)
                raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes) -> None:
    with AtomicFile(path) as f:
        f.write(data)

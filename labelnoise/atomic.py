"""Atomic file writes: every file this project writes appears whole or not at all.

A writer gets a temporary path in the destination's directory (same file
system, so ``os.replace`` is atomic) and the file is renamed into place only
when the writer finished without an exception. An OSError of the write (a
full disk, a read-only folder) names the destination, not the temporary file
(``labelnoise.errors.naming``).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import naming

# mkstemp creates files 0600; give ours the permissions a plain open() would.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    ``suffix`` defaults to the destination's own suffix, so writers that infer
    the format from the extension (soundfile) still do.
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    with naming(path, always=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp.", suffix=suffix, dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)
    tmp_path = Path(tmp)
    try:
        with naming(path):
            yield tmp_path
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj, indent: int | None = 1) -> None:
    write_text(path, json.dumps(obj, indent=indent) + "\n")

"""One process at a time in a folder: an exclusive ``flock`` on ``FOLDER/lock``, which holds the holder's PID.

Two trainers started on the same run dir would both run to the end, each
appending every step to ``metrics.jsonl`` and the last one's ``model.th``
winning. The lock makes the second one stop at once with a line that names
the folder and the process holding it::

    with folder_lock(Path("runs/step1"), "trainer"):
        ...  # train

The kernel drops the lock when its holder exits, however it exits (a
``kill -9`` too), so a stale ``lock`` file never blocks the next run.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

LOCK_NAME = "lock"


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock; the message names the folder and the PID."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, holder: str = "process") -> Iterator[Path]:
    """Hold ``FOLDER/lock`` (made with the folder if need be) while the block runs; FolderBusy if taken."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderBusy(f"{folder}: another {holder} is running in this folder (PID {pid}, holding "
                             f"{path}); wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)

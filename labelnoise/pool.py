"""The stem-pool dataset's files: ``DEST/train/{stem}/{track}.wav`` for every kept stem.

Each is a copy, or a hard link where asked and allowed (a copy where the
file systems differ), written through a temporary name; a re-run skips the
files already there (same inode, or same size and mtime) and removes pool
files no longer kept.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from .progress import bar as progress_bar

from .atomic import atomic_path

log = logging.getLogger(__name__)

# os.link failures after which a copy is made instead: another file system,
# a file system without hard links, a protected or saturated inode.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def _place(src: Path, dst: Path, link: bool) -> str:
    """Copy (or hard-link) one stem through a temporary name; returns "copied" or "linked"."""
    with atomic_path(dst) as tmp:
        if link:
            tmp.unlink()
            try:
                os.link(src, tmp)
                return "linked"
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
        shutil.copyfile(src, tmp)
        st = src.stat()
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # a re-run recognises the copy by size and mtime
        return "copied"


def _already_there(src: Path, dst: Path) -> bool:
    try:
        a, b = src.stat(), dst.stat()
    except FileNotFoundError:
        return False
    return ((a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
            or (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns))


def write_pool(data: Path, dest: Path, kept: dict[str, list[str]], *, link: bool = False,
               progress: bool = True) -> dict[str, int]:
    """``DEST/train/{stem}/{track}.wav`` for every kept stem; pool files no longer kept are removed."""
    counts = {"copied": 0, "linked": 0, "existing": 0, "removed": 0}
    pairs = [(stem, track) for stem, tracks in kept.items() for track in tracks]
    for stem in kept:
        folder = dest / "train" / stem
        if not folder.is_dir():
            continue
        wanted = {f"{t}.wav" for t in kept[stem]}
        for f in folder.iterdir():
            # Leftovers of an earlier selection, or temporary files of a killed one.
            if f.is_file() and (f.name.startswith(".") or (f.suffix == ".wav" and f.name not in wanted)):
                f.unlink()
                counts["removed"] += 1
    link_refused = False
    for stem, track in progress_bar(pairs, desc="pool", unit="file", disable=not progress):
        src, dst = data / track / f"{stem}.wav", dest / "train" / stem / f"{track}.wav"
        if _already_there(src, dst):
            counts["existing"] += 1
            continue
        how = _place(src, dst, link and not link_refused)
        if link and how == "copied" and not link_refused:
            log.warning("hard links refused from %s to %s; copying instead", data, dest)
            link_refused = True
        counts[how] += 1
    return counts

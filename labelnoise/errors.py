"""OS errors as one line naming the path and the cause, for every command-line tool.

A read-only folder, a full disk or a missing permission shows up deep inside a
write (``os.replace``, ``torch.save``, libsndfile, a buffered ``flush``), often
as an ``OSError`` that names no file, or the wrong one (``shutil.copyfile``
names its source when the destination's disk is full). Writers wrap their
writes in :func:`naming`; every CLI's ``main`` is wrapped in
:func:`command_line`, which turns what still escapes into one logged line and
exit code 1::

    log = logging.getLogger("filter")

    @command_line(log)
    def main(argv=None) -> int:
        ...

    # -> ERROR filter: runs/out/volumes.rank0.jsonl: No space left on device (ENOSPC)
"""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
from typing import Callable, Iterator

# Causes that concern where a file is written, never what is read: the destination is the path to name.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
EXIT_OS_ERROR = 1


def describe(exc: OSError) -> str:
    """``PATH: cause (ECODE)``; without a path, the cause alone."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    code = errno.errorcode.get(exc.errno) if exc.errno is not None else None
    cause = f"{cause} ({code})" if code else cause
    return f"{exc.filename}: {cause}" if exc.filename is not None else cause


@contextlib.contextmanager
def naming(path: str | os.PathLike, always: bool = False) -> Iterator[None]:
    """Re-raise an OSError raised inside as one that names ``path``.

    Done when the error names no file or its cause is about the destination
    (full disk, read-only file system, quota); ``always`` for steps where any
    failure concerns ``path`` (making its temporary file).
    """
    try:
        yield
    except OSError as exc:
        if always or exc.filename is None or exc.errno in WRITE_ERRNOS:
            # OSError(errno, ...) comes back as the matching subclass (PermissionError, ...).
            raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(path)) from None
        raise


def command_line(log: logging.Logger) -> Callable:
    """Decorate a CLI ``main(argv) -> int``: an OSError becomes one logged line and exit code 1."""
    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv=None) -> int:
            try:
                return main(argv)
            except OSError as exc:
                log.error("%s", describe(exc))
                return EXIT_OS_ERROR
        return run
    return wrap

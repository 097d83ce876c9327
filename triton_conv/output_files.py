"""Files the commands write: checked before the work that fills them, and written whole.

A report that compiles for minutes must not find at the end that its path is a folder or cannot be
written, and a write cut short must not leave a committed report truncated: the text goes to a
temporary file beside the target, which then replaces it (os.replace, one step on POSIX)."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


def slug(text: str, fallback: str = "x") -> str:
    """'NVIDIA H200' -> 'nvidia-h200': a name for a file (a device's sweeps, tables, plots and tuning
    cache, a layer's plot), the same for every writer of one device's files. Dots go too: a MIG
    slice's name ('... MIG 1g.10gb') keeps the file names it had before the slug was shared."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or fallback


class UnwritableOutput(OSError):
    """The file a command would write cannot be written: found before its work starts. Commands
    turn this one error into a one-line message; any other OSError, raised later by the work
    itself, keeps its traceback."""


def check_writable(path: str) -> None:
    """Raise UnwritableOutput saying why `path` cannot be written: a folder; a read-only file; a
    parent that cannot be made or written. Nothing is left behind: the missing parent folders are
    not made (write_whole makes them when it writes), the nearest existing one is tested instead.

    A read-only file is one this user may not write (os.access), or one with no write bit for
    anyone: root may write any file, but a file made read-only (chmod a-w) to keep it is refused
    for root too, as `cp` without -f would not replace it."""
    if os.path.isdir(path):
        raise UnwritableOutput(f"{path} is a folder: give the file to write")
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        mode = 0  # missing: no file to keep
    check_plain_target(path)  # a device or a pipe
    # A link is replaced, not written through: only a regular file is kept from the write.
    if stat.S_ISREG(mode) and (not os.access(path, os.W_OK) or not mode & 0o222):
        raise UnwritableOutput(f"{path} is read-only: make it writable, or give another file to write")
    folder = os.path.dirname(path) or "."
    while not os.path.lexists(folder) and os.path.dirname(folder) not in ("", folder):
        folder = os.path.dirname(folder)  # the nearest folder there is: those below it are made by the writer
    if not os.path.lexists(folder):
        folder = "."
    try:
        if not os.path.isdir(folder):
            raise NotADirectoryError(f"{folder} is not a folder")
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise UnwritableOutput(f"{path}: {error}") from error


def _kind(mode: int) -> str:
    """What a path that is neither a file, a link nor a folder is, in words: renaming a report over
    /dev/null replaced the device with a file, and opening a named pipe waits for a writer."""
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a named pipe" if stat.S_ISFIFO(mode) else "a socket or other special file"


def check_apart(output: str | os.PathLike, inputs, what: str = "--out") -> None:
    """Raise ValueError when the file `output` is one of `inputs` (files or folders), or lies inside
    one of the folders: a report that wrote a note onto a sweep JSON it read appended markdown to it,
    and every later report of that JSON failed."""
    out = Path(os.path.realpath(output))
    for given in inputs:
        source = Path(os.path.realpath(given))
        if os.path.isdir(source) and (out == source or source in out.parents):
            raise ValueError(f"{what} {output} lies inside {given}, which it reads: write elsewhere")
        if os.path.exists(output) and os.path.exists(source) and os.path.samefile(output, source):
            raise ValueError(f"{what} {output} is {given}, which it reads: write elsewhere")


def write_whole(path: str | os.PathLike, text: str | bytes) -> None:
    """Write `text` (or bytes) to `path` through a temporary file beside it, renamed over it once
    written. A symbolic link at `path` is replaced, never written through: a report's copy cannot
    change the file a link points to (an earlier run's kept copy, or one outside notes/)."""
    path = os.fspath(path)
    check_plain_target(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb" if isinstance(text, bytes) else "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def check_plain_target(path: str) -> None:
    """Raise UnwritableOutput when `path` is there and is neither a file, a link nor missing: the
    last guard before a rename that would replace a device or a pipe (check_writable says so first)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        what = "a folder" if stat.S_ISDIR(mode) else _kind(mode)
        raise UnwritableOutput(f"{path} is {what}, not a file: give a file to write")


def copy_whole(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy a file's bytes to `target` as write_whole writes (a link at `target` replaced, not followed)."""
    with open(source, "rb") as handle:
        write_whole(target, handle.read())


@contextlib.contextmanager
def folder_locked(path: str | os.PathLike):
    """An exclusive lock on the folder holding `path` (flock of the folder itself: no lock file left
    in notes/), so that two writers that read a file, merge into it and write it back (a report
    splicing a note, autotune rows merged into a device's table) take turns instead of both starting
    from the same old text (the later write dropped the earlier one's part). Without fcntl, no lock."""
    parent = Path(path).parent
    if fcntl is None:
        yield
        return
    parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(parent, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a file system without flock: unlocked, as before
            fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # closing the descriptor releases the lock

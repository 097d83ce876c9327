"""The persistent tuning cache: one JSON file per device name, Triton version and package version.

Files live in $TRITON_CONV_CACHE_DIR (default ~/.cache/triton-conv). Writes are atomic (a temporary
file in the same folder, then os.replace) and merge under an exclusive fcntl lock: a writer re-reads
the file inside the lock and adds its entries to what is there, so two processes tuning at once
neither corrupt the file nor lose each other's entries. A file that does not parse, or whose header
names another schema, device or version (stale), is ignored with a warning and rebuilt on the next
write; an entry that does not hold a valid config is dropped with a warning. A cache that cannot be
read or written (a folder where the file should be, a cache folder that is a file or read-only)
warns and the process carries on with what it has in memory: the cache never fails a convolution.
A file that is there but cannot be read (another user's, in a shared folder) is never written over,
since that would drop its entries. A new file gets the mode the umask gives (0644, or 0664 under
umask 002 in a folder a group shares) and a rewritten one keeps its mode, so everyone who can take
the lock can read it; a link is followed, and its target locked, so a cache shared through links
stays one file.
On a miss the file is re-read before anyone tunes, so a second process never re-tunes a
shape another process has cached. `TuneResult` is what a tuning returns and, as `entry()`, what
the file stores per key: winner, runner-up, every config's time, the problem it was timed on.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import stat
import time
import uuid
import warnings
from dataclasses import dataclass, field

from .cache_entries import valid_entry
from .configs import KernelConfig
from .output_files import slug

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock, writes stay atomic
    fcntl = None

SCHEMA = 1
ENV_DIR = "TRITON_CONV_CACHE_DIR"


class _Unreadable(Exception):
    """The cache file is there but could not be read: put must not write over it."""


def _new_temporary(folder: str) -> tuple[int, str]:
    """A new file in `folder` to be renamed over the cache: (descriptor, path), made with the mode the
    umask gives (the kernel applies it to 0666), where mkstemp would make it 0600."""
    path = os.path.join(folder, f".tmp-{os.getpid()}-{uuid.uuid4().hex}.json")
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path


STALE_TEMPORARY_S = 3600.0  # a writer's temporary file this old was left by a killed writer


def _remove_stale_temporaries(folder: str) -> None:
    """Remove temporaries (_new_temporary) that writers killed between creating and renaming them
    left behind (a megabyte or more each, never read). Only old ones: a writer on another machine
    sharing the folder may hold no lock this one sees, and its temporary lives for milliseconds."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.startswith(".tmp-") and entry.name.endswith(".json") and entry.is_file():
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > STALE_TEMPORARY_S:
                        os.unlink(entry.path)


def _kind(path: str) -> str:
    mode = os.stat(path).st_mode
    return "a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else "a device or socket"


def package_version() -> str:
    """triton_conv.__version__ (kept in triton_conv/_version.py, which imports nothing)."""
    from ._version import __version__

    return __version__


def triton_version() -> str:
    import triton

    return triton.__version__


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get(ENV_DIR) or os.path.join("~", ".cache", "triton-conv"))


def cache_path(device_name: str) -> str:
    """<cache dir>/<device>--triton-<version>--triton-conv-<version>.json"""
    name = f"{slug(device_name, 'device')}--triton-{triton_version()}--triton-conv-{package_version()}.json"
    return os.path.join(cache_dir(), name)


class TuningCache:
    """Tuned entries (tuning key -> dict with at least 'config') of one device, on disk."""

    def __init__(self, device_name: str, path: str | None = None):
        self.device_name = device_name
        self.path = path or cache_path(device_name)
        self.header = {
            "schema": SCHEMA,
            "device": device_name,
            "triton": triton_version(),
            "triton_conv": package_version(),
        }
        self.entries: dict[str, dict] = {}
        self._warned: set[str] = set()
        self.refresh()

    # --- reading ----------------------------------------------------------------------------------
    def _read(self, writing: bool = False, warn=None) -> dict[str, dict]:
        """The file's valid entries; {} (with a warning, once per problem) when missing, unreadable,
        corrupt or stale. With `writing` (put's read under the lock) a file that is there but cannot be
        read raises _Unreadable instead: writing over it would drop the entries it holds. `warn` takes
        the warnings instead of warnings.warn (put's, raised once its lock is released: a warnings
        hook that tunes a convolution would otherwise wait for that lock in this same process)."""
        warn = warn or self._warn
        try:
            if os.path.exists(self.path) and not os.path.isfile(self.path):  # a pipe would block open
                raise OSError(f"not a regular file: {_kind(self.path)}")
            with open(self.path) as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        except OSError as error:  # a folder or a pipe in its place, no permission, ...
            if writing:
                raise _Unreadable(str(error)) from error
            warn(f"unreadable tuning cache {self.path} ({error}): ignored")
            return {}
        except (ValueError, RecursionError) as error:  # not JSON, or nested too deep to parse
            warn(f"corrupt tuning cache {self.path} ({type(error).__name__}): ignored, it will be rebuilt")
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            warn(f"corrupt tuning cache {self.path} (no entries table): ignored, it will be rebuilt")
            return {}
        found = {k: data.get(k) for k in self.header}
        if found != self.header:
            warn(
                f"stale tuning cache {self.path} (made for {found}, now {self.header}): "
                "ignored, it will be rebuilt"
            )
            return {}
        entries = {k: v for k, v in data["entries"].items() if isinstance(k, str) and valid_entry(k, v)}
        if len(entries) != len(data["entries"]):
            dropped = len(data["entries"]) - len(entries)
            warn(f"tuning cache {self.path}: {dropped} malformed entries ignored (they will be re-tuned)")
        return entries

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def refresh(self) -> None:
        """Re-read the file (another process may have added entries since)."""
        self.entries.update(self._read())

    def get(self, key: str) -> dict | None:
        """The entry for `key`: memory first, then the file as it is now."""
        if key not in self.entries:
            self.refresh()
        return self.entries.get(key)

    # --- writing ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self):
        # Beside the file the writes replace (a link's target): writers that reach one shared cache
        # through links of their own take one lock.
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        path = os.path.realpath(self.path) + ".lock"
        if os.path.exists(path) and not os.path.isfile(path):  # a pipe would block the open
            raise OSError(f"its lock {path} is not a regular file: {_kind(path)}")
        with open(path, "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def put(self, key: str, entry: dict) -> dict:
        """Add an entry and merge it into the file; returns the entry the file now holds for `key`
        (another process's, when it cached the same key first). When the file cannot be written, or
        is there but cannot be read (it is then left as it is), the entry is kept in memory only, with
        a warning."""
        deferred: list[str] = []
        try:
            with self._locked():
                on_disk = self._read(writing=True, warn=deferred.append)
                merged = {**on_disk, key: on_disk.get(key, entry)}
                self._write(merged)
                _remove_stale_temporaries(os.path.dirname(os.path.realpath(self.path)))
        except _Unreadable as error:
            self._warn(
                f"cannot write tuning cache {self.path}: it is there but cannot be read ({error}), so it "
                "is left as it is; tuned configs stay in memory only"
            )
            merged = {key: self.entries.get(key, entry)}
        except OSError as error:
            self._warn(f"cannot write tuning cache {self.path} ({error}): tuned configs stay in memory only")
            merged = {key: self.entries.get(key, entry)}
        finally:
            for message in deferred:
                self._warn(message)
        self.entries.update(merged)
        return merged[key]

    def _write(self, entries: dict) -> None:
        """Replace the file whole. A link is followed (a cache shared through one stays shared; the
        report's output_files.write_whole replaces links instead, its files being its own), and the
        file keeps the mode it has (one writer's umask of 077 must not shut out the group); a new
        file gets the mode the umask gives (_new_temporary)."""
        text = json.dumps({**self.header, "entries": entries}, indent=1, sort_keys=True)
        target = os.path.realpath(self.path)
        handle, temporary = _new_temporary(os.path.dirname(target))
        try:
            with os.fdopen(handle, "w") as out:
                with contextlib.suppress(FileNotFoundError):
                    if hasattr(os, "fchmod"):
                        os.fchmod(out.fileno(), os.stat(target).st_mode & 0o777)
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


@dataclass
class TuneResult:
    """One tuning's outcome (or a cached one's), and `entry()`, what the cache file stores for it."""

    key: str
    best: KernelConfig
    best_ms: float | None
    runner_up: KernelConfig | None = None
    runner_up_ms: float | None = None
    timings: list = field(default_factory=list)  # [(config, ms)], ms = inf where a config failed
    timed_on: str | None = None  # 'cuda', 'cpu', or None: not timed (the default config)
    cached: bool = False  # found in the cache, not timed now
    problem: str = ""  # the problem it was timed on
    errors: dict = field(default_factory=dict)  # str(config) -> why it did not run

    def entry(self) -> dict:
        return {
            "config": self.best.as_dict(),
            "ms": self.best_ms,
            "runner_up": self.runner_up.as_dict() if self.runner_up else None,
            "runner_up_ms": self.runner_up_ms,
            "timings": [[str(c), None if math.isinf(ms) else ms] for c, ms in self.timings],
            "timed_on": self.timed_on,
            "problem": self.problem,
            "errors": self.errors,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }

    @classmethod
    def from_entry(cls, key: str, entry: dict) -> TuneResult:
        runner = entry.get("runner_up")
        return cls(
            key, KernelConfig.from_dict(entry["config"]), entry.get("ms"),
            KernelConfig.from_dict(runner) if runner else None, entry.get("runner_up_ms"),
            [], entry.get("timed_on"), True, entry.get("problem", ""),
        )  # fmt: skip


_OPEN: dict[str, TuningCache] = {}


def get_cache(device_name: str) -> TuningCache:
    """The process-wide cache object of a device (one per file path)."""
    path = cache_path(device_name)
    if path not in _OPEN:
        _OPEN[path] = TuningCache(device_name, path)
    return _OPEN[path]


def forget_open_caches() -> None:
    """Drop the in-memory copies (tests; or after moving TRITON_CONV_CACHE_DIR)."""
    _OPEN.clear()

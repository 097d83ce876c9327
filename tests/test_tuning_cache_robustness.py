"""The persistent tuning cache copes with whatever it finds on disk: a malformed entry, a file nested
too deep to parse, a folder where the file should be, a cache folder that is a file or read-only.
Each gives a warning and the process carries on (the default config, or a re-tune whose result
stays in memory); nothing raises out of the config choice that conv2d makes on a GPU."""

from __future__ import annotations

import json
import os
import signal
import stat
import warnings

import pytest
import torch

from triton_conv import choices, tuning, tuning_cache
from triton_conv.configs import KernelConfig, default_pass_config
from triton_conv.problem import ConvProblem
from triton_conv.pruning import pruned_space
from triton_conv.tuning_keys import tuning_key

PROBLEM = ConvProblem.from_shapes((2, 5, 9, 11), (7, 5, 3, 3), padding=1)
KEY = tuning_key(PROBLEM, "fprop", torch.float16, False)
GOOD = KernelConfig(64, 32, 32).as_dict()


def _choose():
    """What passes.choose_config does on a CUDA device (the cache read, then a re-tune on a miss)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = choices.select_config(PROBLEM, "fprop", torch.float16, False, "cuda")
    return config, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def _write(folder, text: str):
    os.makedirs(folder, exist_ok=True)
    with open(tuning_cache.cache_path("Pretend"), "w") as handle:
        handle.write(text)


def _file_with(entry) -> str:
    header = {
        "schema": tuning_cache.SCHEMA, "device": "Pretend", "triton": tuning_cache.triton_version(),
        "triton_conv": tuning_cache.package_version(),
    }  # fmt: skip
    return json.dumps({**header, "entries": {KEY: entry}})


MALFORMED = {
    "missing_fields": {"config": {"block_m": 64, "block_n": 64}},
    "a_string": "64x64x32",
    "config_a_string": {"config": "64x64x32"},
    "not_a_power_of_two": {"config": {**GOOD, "block_m": 48}},
    "a_bool": {"config": {**GOOD, "group_m": True}},
    "a_float": {"config": {**GOOD, "num_warps": 4.0}},
    "absurd_split": {"config": {**GOOD, "split_k": 2**20}},
    "bad_runner_up": {"config": GOOD, "runner_up": {"block_m": "big"}},
    "bad_time": {"config": GOOD, "ms": "fast"},
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_entry_is_dropped_and_re_tuned(case, pretend_gpu):
    _write(pretend_gpu, _file_with(MALFORMED[case]))
    config, messages = _choose()
    assert any("malformed entries ignored" in m for m in messages)
    assert config == min(pruned_space(PROBLEM, "fprop", torch.float16, "H200"),
                         key=lambda c: c.block_m * c.block_n)  # fmt: skip
    with open(tuning_cache.cache_path("Pretend")) as handle:  # rewritten with the re-tuned entry
        assert tuning_cache.valid_entry(KEY, json.load(handle)["entries"][KEY])


def test_an_entry_too_big_for_the_device_is_not_launched(pretend_gpu):
    """A plausible entry (within the sanity bounds) whose pipeline needs more shared memory per block
    than the GPU has: Triton would refuse the launch, so the choice warns and re-tunes."""
    huge = {**GOOD, "block_m": 512, "block_n": 512, "block_k": 128, "num_stages": 4}  # 1 MiB in fp16
    _write(pretend_gpu, _file_with({"config": huge}))
    config, messages = _choose()
    assert any("needs more shared memory per block than H200" in m for m in messages), messages
    assert config == min(pruned_space(PROBLEM, "fprop", torch.float16, "H200"),
                         key=lambda c: c.block_m * c.block_n)  # fmt: skip


def test_during_a_graph_capture_an_entry_too_big_for_the_device_gets_the_default(pretend_gpu):
    """While a CUDA graph is captured nothing can be timed: the choice reads the cache, and an
    entry Triton could not launch there gets the default config, as a miss does, never the launch."""
    from triton_conv import passes
    from triton_conv.devices import get_device

    huge = {**GOOD, "block_m": 512, "block_n": 512, "block_k": 128, "num_stages": 4}  # 1 MiB in fp16
    h200 = get_device("H200")
    default = default_pass_config(PROBLEM, "fprop", torch.float16, h200.sm_count, h200.compute_capability)
    for entry, want in (({"config": GOOD}, KernelConfig(**GOOD)), ({"config": huge}, default)):
        _write(pretend_gpu, _file_with(entry))
        tuning_cache.forget_open_caches()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the once-per-process default's warning
            got = passes.config_during_capture(PROBLEM, "fprop", torch.float16, False, "cuda")
        assert got == want, entry


def test_a_valid_entry_is_used():
    assert tuning_cache.valid_entry(KEY, {"config": GOOD, "runner_up": None, "ms": 1.5, "timed_on": "cuda"})


def test_a_file_nested_too_deep_is_ignored(pretend_gpu):
    _write(pretend_gpu, "[" * 200_000 + "]" * 200_000)
    config, messages = _choose()
    assert any("corrupt tuning cache" in m for m in messages)
    assert isinstance(config, KernelConfig)


def test_a_folder_where_the_file_should_be(pretend_gpu):
    os.makedirs(tuning_cache.cache_path("Pretend"))
    config, messages = _choose()
    assert any("unreadable tuning cache" in m for m in messages)
    assert any("cannot write tuning cache" in m for m in messages)
    assert isinstance(config, KernelConfig)


def test_a_cache_folder_that_is_a_file(pretend_gpu):
    pretend_gpu.parent.mkdir(exist_ok=True)
    pretend_gpu.write_text("not a folder")
    config, messages = _choose()
    assert any("cannot write tuning cache" in m for m in messages)
    choices.forget_choices()
    assert _choose()[0] == config  # a re-tune gives the same choice; still nothing raised


def test_a_read_only_cache_folder(pretend_gpu, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tuning_cache, "_new_temporary", refuse)  # as a read-only folder does
    config, messages = _choose()
    assert any("cannot write tuning cache" in m and "Permission denied" in m for m in messages)
    assert isinstance(config, KernelConfig)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_cache_folder_for_real(pretend_gpu):
    pretend_gpu.mkdir(parents=True)
    pretend_gpu.chmod(0o500)
    try:
        config, messages = _choose()
    finally:
        pretend_gpu.chmod(0o700)
    assert any("cannot write tuning cache" in m for m in messages)
    assert isinstance(config, KernelConfig)


def test_autotune_off_with_a_corrupt_file_uses_the_default(pretend_gpu, monkeypatch):
    """With autotuning off a miss uses the default config: a broken cache changes nothing else."""
    monkeypatch.setenv(tuning.ENV_AUTOTUNE, "0")
    _write(pretend_gpu, "{ not json")
    config, messages = _choose()
    assert config == default_pass_config(PROBLEM, "fprop", torch.float16, sm_count=132)
    assert any("corrupt tuning cache" in m for m in messages)


def test_the_cache_folder_expands_a_leading_tilde(monkeypatch, tmp_path):
    """TRITON_CONV_CACHE_DIR='~/x' is the home folder's x, as a shell would read it, not a folder
    named '~' under the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(tuning_cache.ENV_DIR, "~/tuning")
    assert tuning_cache.cache_dir() == os.path.join(str(tmp_path), "tuning")
    monkeypatch.delenv(tuning_cache.ENV_DIR)
    assert tuning_cache.cache_dir() == os.path.join(str(tmp_path), ".cache", "triton-conv")


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077], ids=["002", "022", "077"])
def test_the_written_file_has_the_mode_the_umask_gives(umask, tmp_path, monkeypatch):
    """mkstemp made the file 0600 whatever the umask: in a folder a group shares (umask 002) the next
    user could take the lock but not read the file, and wrote over it with their entries alone."""
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path))
    before = os.umask(umask)
    try:
        cache = tuning_cache.TuningCache("Pretend")
        cache.put(KEY, {"config": GOOD})
    finally:
        os.umask(before)
    assert os.stat(cache.path).st_mode & 0o777 == 0o666 & ~umask
    with open(cache.path) as handle:
        assert list(json.load(handle)["entries"]) == [KEY]


def test_a_file_there_but_unreadable_is_not_written_over(tmp_path, monkeypatch):
    """Another user's cache file this user cannot read (its entries unknown): put leaves it as it is,
    warns once, and the entry serves from memory. (Tests run as root, which chmod 000 does not stop,
    so the read is made to fail.)"""
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path))
    path = tuning_cache.cache_path("Pretend")
    _write(tmp_path, _file_with({"config": GOOD}))
    with open(path, "rb") as handle:
        theirs = handle.read()
    real_open = open

    def refuse(file, *args, **kwargs):
        if file == path:
            raise PermissionError(13, "Permission denied", file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    mine = {**GOOD, "block_m": 128}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = tuning_cache.TuningCache("Pretend")
        assert cache.get("mine") is None
        for key in ("mine", "mine too"):
            assert cache.put(key, {"config": mine}) == {"config": mine}
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("unreadable tuning cache" in m for m in messages)
    assert sum("cannot write tuning cache" in m and "left as it is" in m for m in messages) == 1, messages
    assert cache.get("mine") == {"config": mine} and cache.get("mine too") == {"config": mine}
    monkeypatch.undo()
    with open(path, "rb") as handle:
        assert handle.read() == theirs


def test_a_linked_cache_stays_linked_and_a_file_keeps_its_mode(tmp_path, monkeypatch):
    """A cache shared through a link became a private file on the first write (the link replaced),
    and one writer's umask of 077 made a group's file unreadable to the rest."""
    shared = tmp_path / "team" / "cache.json"
    shared.parent.mkdir()
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path / "mine"))
    link = tuning_cache.cache_path("Pretend")
    os.makedirs(os.path.dirname(link))
    os.symlink(shared, link)
    cache = tuning_cache.TuningCache("Pretend")
    cache.put(KEY, {"config": GOOD})
    assert os.path.islink(link) and list(json.loads(shared.read_text())["entries"]) == [KEY]
    os.chmod(shared, 0o664)
    before = os.umask(0o077)
    try:
        cache.put("another", {"config": GOOD})
    finally:
        os.umask(before)
    assert os.stat(shared).st_mode & 0o777 == 0o664
    assert sorted(json.loads(shared.read_text())["entries"]) == sorted([KEY, "another"])


@pytest.fixture
def no_hang():
    """A regression here blocks in open() of a pipe: fail it after 20 s instead of holding CI."""

    def stuck(*args):
        raise TimeoutError("blocked on a pipe")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_pipe_where_the_file_should_be_neither_blocks_nor_is_replaced(tmp_path, monkeypatch, no_hang):
    """open() of a FIFO waits for a writer: TuningCache() hung."""
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path))
    path = tuning_cache.cache_path("Pretend")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = tuning_cache.TuningCache("Pretend")
        assert cache.put(KEY, {"config": GOOD}) == {"config": GOOD}
    messages = [str(w.message) for w in caught]
    assert any("not a regular file: a pipe" in m for m in messages), messages
    assert stat.S_ISFIFO(os.stat(path).st_mode) and cache.get(KEY) == {"config": GOOD}


def test_a_pipe_where_the_lock_should_be_is_a_warning_not_a_hang(tmp_path, monkeypatch, no_hang):
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path))
    path = tuning_cache.cache_path("Pretend")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path + ".lock")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = tuning_cache.TuningCache("Pretend")
        assert cache.put(KEY, {"config": GOOD}) == {"config": GOOD}
    assert any("lock" in str(w.message) and "a pipe" in str(w.message) for w in caught)
    assert cache.get(KEY) == {"config": GOOD}


def test_warnings_of_a_write_come_after_its_lock_is_released(tmp_path, monkeypatch):
    """put warned about a malformed entry while it held the file lock: a warnings hook that ran a
    convolution (and so a put of its own) waited for that lock in this same process, for ever."""
    import fcntl

    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path))
    _write(tmp_path, _file_with(MALFORMED["a_string"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = tuning_cache.TuningCache("Pretend")
    cache._warned.clear()  # the first read's warning again, now from put's read under the lock
    free_when_warned = []

    def hook(message, *args, **kwargs):
        with open(os.path.realpath(cache.path) + ".lock", "a") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                free_when_warned.append(True)
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
            except BlockingIOError:
                free_when_warned.append(False)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = hook
        assert cache.put(KEY, {"config": GOOD}) == {"config": GOOD}
    assert free_when_warned == [True]


def test_temporaries_left_by_killed_writers_are_removed_once_old(tmp_path, monkeypatch):
    """A writer killed between creating its temporary and renaming it left a file (a megabyte or more
    for a big cache) that nothing removed. Old ones go at the next write; a fresh one (a writer on
    another machine sharing the folder, mid-write) stays."""
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path))
    folder = os.path.dirname(tuning_cache.cache_path("Pretend"))
    os.makedirs(folder, exist_ok=True)
    old, fresh, other = (
        os.path.join(folder, name) for name in (".tmp-1-a.json", ".tmp-2-b.json", "notes.json")
    )
    for path in (old, fresh, other):
        with open(path, "w") as handle:
            handle.write("{}")
    hours_ago = os.path.getmtime(old) - 2 * tuning_cache.STALE_TEMPORARY_S
    os.utime(old, (hours_ago, hours_ago))
    os.utime(other, (hours_ago, hours_ago))
    tuning_cache.TuningCache("Pretend").put(KEY, {"config": GOOD})
    assert not os.path.exists(old) and os.path.exists(fresh) and os.path.exists(other)


def test_a_key_another_process_cached_first_keeps_its_entry(tmp_path, monkeypatch):
    """Two processes tuned one key at once, and their timings (so their winners) may differ: the one
    that wrote first keeps its entry, and the other's put answers with it, so every process runs one
    config per key. (A second cache object on the same file stands for the other process: each keeps
    its own entries in memory and meets the other's only in the file.)"""
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path))
    ours = tuning_cache.TuningCache("Pretend")  # loaded before the other process wrote
    theirs, mine = {"config": GOOD}, {"config": {**GOOD, "block_m": 128}}
    tuning_cache.TuningCache("Pretend").put(KEY, theirs)
    assert ours.put(KEY, mine) == theirs
    assert ours.get(KEY) == theirs
    with open(ours.path) as handle:
        assert json.load(handle)["entries"][KEY] == theirs
    assert tuning_cache.TuningCache("Pretend").get(KEY) == theirs  # a process started later


def test_a_miss_reads_what_another_process_wrote_since(tmp_path, monkeypatch):
    """A process that tunes a shape another process cached after this one loaded the file would tune
    it again (seconds to minutes on a GPU) and may run another config: a miss in memory re-reads the
    file. This one already holds an entry of its own, so the re-read is not the first load's."""
    monkeypatch.setenv(tuning_cache.ENV_DIR, str(tmp_path))
    ours = tuning_cache.TuningCache("Pretend")
    ours.put("ours", {"config": GOOD})
    assert ours.get(KEY) is None
    theirs = {"config": {**GOOD, "block_n": 64}}
    tuning_cache.TuningCache("Pretend").put(KEY, theirs)  # the other process, after our load
    assert ours.get(KEY) == theirs
    assert ours.get("ours") == {"config": GOOD}

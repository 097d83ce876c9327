"""The sm_90 static report: configs of the space compile for Hopper (a deterministic sample here, all
of them in `triton-conv static-report`), and each committed table (one per Triton it was made with)
lists exactly the current space and says which Triton made it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from triton_conv import compile_check, static_report
from triton_conv.problem import PASSES
from triton_conv.search_space import config_space

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = os.path.join(REPO, static_report.default_path())
SIZES = {"fp16": 2, "bf16": 2, "fp32": 4}


def _sample():
    """Per pass: the first, middle and last config of the space, each in another dtype."""
    cases = []
    for pass_name in PASSES:
        space = config_space(pass_name)
        for dtype, index in zip(("fp16", "bf16", "fp32"), (0, len(space) // 2, len(space) - 1), strict=True):
            cases.append((pass_name, dtype, space[index]))
    return cases


SAMPLE = _sample()


@pytest.fixture(scope="module")
def compiled():
    return dict(zip(SAMPLE, static_report.compile_cases(SAMPLE, workers=2), strict=True))


@pytest.mark.parametrize("case", SAMPLE, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}".replace(" ", "_"))
def test_sampled_config_compiles_for_sm90(case, compiled):
    pass_name, dtype, config = case
    report = compiled[case]
    assert report.capability == 90 and report.kernel == f"{pass_name}_kernel"
    # the shared_memory rule's formula is what the compiler allocates, give or take small extras
    # (wgrad's TMA pipeline keeps a barrier per stage)
    assert report.shared_bytes <= config.shared_bytes(SIZES[dtype], (9, 0)) + 4096
    verdict = static_report.verdict(pass_name, static_report._BY_NAME[dtype], config, report)
    assert not verdict.startswith("FLAG"), (verdict, report)
    if verdict.startswith("ok"):  # what the tuner may time on Hopper: wgmma, no local-memory traffic
        assert report.wgmma and report.local_loads == 0, report


@pytest.fixture(scope="module")
def compiled_for_sm80():
    return dict(zip(SAMPLE, static_report.compile_cases(SAMPLE, workers=2, capability=80), strict=True))


@pytest.mark.parametrize("case", SAMPLE, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}".replace(" ", "_"))
def test_shared_memory_rule_is_what_each_architecture_allocates(case, compiled, compiled_for_sm80):
    """Triton's pipeliner keeps num_stages operand buffers on sm_90 and num_stages - 1 on sm_80
    (KernelConfig.shared_bytes): the shared_memory rule may neither let a config through that cannot
    launch nor prune one an A100 or RTX 4090 could run."""
    pass_name, dtype, config = case
    for capability, report in ((90, compiled[case]), (80, compiled_for_sm80[case])):
        rule = config.shared_bytes(SIZES[dtype], (capability // 10, 0))
        assert rule <= report.shared_bytes <= rule + 1024, (capability, report.shared_bytes, rule)


def _committed_tables():
    """Every committed static table: one per Triton the reports were made with (CI's two legs)."""
    folder = os.path.join(REPO, "notes", "autotune")
    names = sorted(
        name for name in os.listdir(folder) if re.fullmatch(r"sm90_static-triton\d+\.\d+\.md", name)
    )
    return [os.path.join(folder, name) for name in names]


def test_there_is_a_table_for_the_installed_triton_or_it_is_said():
    """CI's legs (Triton 3.6, 3.9) have theirs; another Triton in the supported range (3.7 and 3.8,
    which Python 3.10's torch wheels bring) runs every compile check above but has no committed
    table: a skip that says how to make one, not a failure."""
    if not os.path.exists(COMMITTED):
        made = ", ".join(os.path.basename(path) for path in _committed_tables())
        pytest.skip(f"no committed table for this Triton ({made} are): `triton-conv static-report` makes one")


@pytest.mark.parametrize("path", _committed_tables(), ids=os.path.basename)
def test_committed_table_lists_the_current_space(path):
    listed = static_report.listed_cases(path)
    current = {(p, d, str(c)) for p, d, c in static_report.space_cases()}
    missing, stale = current - listed, listed - current
    assert not missing and not stale, (
        f"{path} is out of date ({len(missing)} configs missing, {len(stale)} no longer in the space): "
        "regenerate it with `triton-conv static-report` under that Triton"
    )


@pytest.mark.parametrize("path", _committed_tables(), ids=os.path.basename)
def test_committed_table_is_labelled_and_has_no_flags(path):
    with open(path) as handle:
        text = handle.read()
    version = re.search(r"triton(\d+\.\d+)\.md$", path).group(1)
    assert "compiled, not measured" in text and "sm_90" in text and "commit " in text
    assert re.search(rf"- Triton {re.escape(version)}\.\d+,", text), "the table was made by another Triton"
    assert "FLAG" not in text.split("## ", 1)[1], "a config spills or falls off wgmma unpruned"


def test_space_cases_cover_every_pass_and_dtype():
    cases = static_report.space_cases()
    assert len(cases) == 3 * sum(len(config_space(p)) for p in PASSES)
    assert {d for _, d, _ in cases} == {"fp16", "bf16", "fp32"}


def test_build_spec_uses_the_gpu_flags():
    spec = static_report.build_spec("wgrad", torch.bfloat16, config_space("wgrad")[0])
    assert spec.constexprs["UPCAST"] is False and spec.constexprs["INPUT_PRECISION"] == "ieee"
    spec = static_report.build_spec("fprop", torch.float32, config_space("fprop")[0])
    assert spec.constexprs["INPUT_PRECISION"] == "tf32"


# Stopping the compile workers. A few real fprop compiles in a cache of the test's own: each takes
# seconds on two cores, so the workers are still busy when their parent is killed or interrupted.
FEW = [("fprop", "fp16", config) for config in config_space("fprop")[:4]]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG")


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields from the state on (state, ppid, ...), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()
    except OSError:
        return None


def _workers_of(parent: int) -> dict[int, str]:
    """The compile workers `parent` started: {pid: start time, which tells a reused pid apart}."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read()
        except OSError:
            continue
        fields = _stat(int(entry))
        if fields and int(fields[1]) == parent and b"triton_conv.compile_check" in command:
            found[int(entry)] = fields[19]
    return found


def _running(workers: dict[int, str]) -> list[int]:
    """Those still running (a zombie that nobody reaps, as in a container without an init, is not)."""
    alive = []
    for pid, started in workers.items():
        fields = _stat(pid)
        if fields is not None and fields[19] == started and fields[0] not in ("Z", "X"):
            alive.append(pid)
    return alive


def _wait_for_workers(parent: subprocess.Popen, count: int = 2, timeout_s: float = 30.0) -> dict[int, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = _workers_of(parent.pid)
        if len(workers) >= count:
            return workers
        assert parent.poll() is None, parent.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no {count} compile workers after {timeout_s} s")


def _gone_within(workers: dict[int, str], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while _running(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _running(workers)


def _start(code: str, tmp_path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO, "TRITON_CACHE_DIR": str(tmp_path / "triton-cache")}
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@linux_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_compile_workers_die_with_their_parent(signum, tmp_path):
    """A SIGTERM to `triton-conv static-report` left its workers compiling for a minute, orphaned:
    each asks the kernel for SIGTERM when its parent dies, however it dies."""
    parent = _start(
        "from triton_conv import static_report\n"
        "from triton_conv.search_space import config_space\n"
        "static_report.compile_cases([('fprop', 'fp16', c) for c in config_space('fprop')[:4]], workers=2)\n",
        tmp_path,
    )
    try:
        workers = _wait_for_workers(parent)
        time.sleep(3)  # past the worker's first lines: importing torch, or compiling
        assert len(_running(workers)) == 2, "the workers finished before the test killed their parent"
        parent.send_signal(signum)
        parent.wait(timeout=10)
        assert _gone_within(workers, 5) == []
    finally:
        parent.kill()
        parent.communicate()


@linux_only
def test_sigint_to_the_cli_alone_stops_its_workers_and_says_so(tmp_path):
    """SIGINT to the command's process alone (not its group, as Ctrl-C would) waited for the workers
    to finish every compile; Ctrl-C ended it with a traceback. Now: the workers killed, one line, 130."""
    out = tmp_path / "static.md"
    parent = _start(
        "import signal\n"  # Python turns SIGINT into KeyboardInterrupt only where it is not ignored
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from triton_conv.cli import main\n"
        f"raise SystemExit(main(['static-report', '--workers', '2', '--out', {str(out)!r}]))\n",
        tmp_path,
    )
    try:
        workers = _wait_for_workers(parent)
        time.sleep(3)
        assert len(_running(workers)) == 2
        interrupted = time.monotonic()
        parent.send_signal(signal.SIGINT)
        _, err = parent.communicate(timeout=20)
        assert time.monotonic() - interrupted < 5, "the command waited for its workers"
        assert parent.returncode == 130, err.decode()
        assert err.decode().strip() == "triton-conv static-report: interrupted"
        assert _gone_within(workers, 1) == [] and not out.exists()
    finally:
        parent.kill()
        parent.communicate()


def test_an_exception_in_the_parent_kills_and_reaps_its_workers(tmp_path, monkeypatch):
    """An exception while compile_specs waits (here raised by a timer, as Ctrl-C raises one) stops
    the workers at once instead of waiting for their compiles, and leaves no zombie."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))
    started = []
    real_popen = subprocess.Popen

    def recorded(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        if len(started) == 2:  # both started: they are importing torch for seconds yet
            signal.setitimer(signal.ITIMER_REAL, 1.0)
        return started[-1]

    class Stop(Exception):
        pass

    fired = []

    def stop(*_):
        fired.append(time.monotonic())
        raise Stop

    monkeypatch.setattr(compile_check.subprocess, "Popen", recorded)
    previous = signal.signal(signal.SIGALRM, stop)
    try:
        with pytest.raises(Stop):
            static_report.compile_cases(FEW, workers=2)
        assert time.monotonic() - fired[0] < 5, "compile_specs waited for its workers (about 27 s)"
        assert len(started) == 2
        assert [proc.returncode for proc in started] == [-signal.SIGKILL] * 2  # killed, and reaped
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        for proc in started:
            proc.kill()
            proc.wait()


def test_a_worker_that_fails_stops_the_others(tmp_path, monkeypatch):
    """One worker's failure was raised only once every other worker had compiled all of its share."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))
    started = []
    real_popen, real_describe = subprocess.Popen, compile_check.describe

    def recorded(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    def second_unknown(spec, capability):  # worker 1's first job names no kernel: worker 0 is waited on first
        job = real_describe(spec, capability)
        return {**job, "name": "no_such_kernel"} if spec is specs[1] else job

    specs = [static_report.build_spec(p, static_report._BY_NAME[d], c) for p, d, c in FEW]
    monkeypatch.setattr(compile_check.subprocess, "Popen", recorded)
    monkeypatch.setattr(compile_check, "describe", second_unknown)
    with pytest.raises(RuntimeError, match="no_such_kernel"):
        compile_check.compile_specs(specs, 90, workers=2)
    assert [proc.returncode for proc in started] == [-signal.SIGKILL, 1]  # worker 0 killed mid-compile

"""child_processes: every helper process the package starts (sm_90 compile workers, the campaign's
compile and check children) dies with the process that started it, and leads a process group of its
own, which its parent kills whole. A campaign killed at the lease's end left compile children
running, and the check's child, which holds a CUDA context."""

import os
import signal
import subprocess
import sys
import time

import pytest

from triton_conv import child_processes

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

PARENT = """
import subprocess, sys, time
from triton_conv.child_processes import python_child
code = "import subprocess\\ncompiler = subprocess.Popen(['sleep', '60'])\\nprint(compiler.pid, flush=True)\\n"
child = subprocess.Popen(python_child(code + "import time\\ntime.sleep(60)"), stdout=subprocess.PIPE,
                         start_new_session=True)
compiler = int(child.stdout.readline())
print(child.pid, compiler, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


@linux_only
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_a_child_dies_with_its_parent(signum):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, env=env, cwd=repo)
    try:
        child, compiler = map(int, parent.stdout.readline().split())
        assert _alive(child) and _alive(compiler)
        parent.send_signal(signum)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while (_alive(child) or _alive(compiler)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived its parent"
        assert not _alive(compiler), "the compiler the child started outlived it, in its own session"
    finally:
        parent.kill()


def test_a_child_runs_its_code_with_its_arguments():
    argv = child_processes.python_child("import sys\nprint(sys.argv[1:])", "a", "b")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "['a', 'b']", done.stderr
    argv = child_processes.module_child("json.tool", "--help")  # as `python -m json.tool --help`
    assert subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.startswith("usage:")


@linux_only
def test_kill_group_stops_the_compilers_a_child_started():
    """Killed alone, a compile worker left its ptxas running, which held the worker's stdout open:
    the parent's communicate() waited for the compiler. The child leads its own group, and the
    whole group is killed."""
    code = (
        "import subprocess\ngrandchild = subprocess.Popen(['sleep', '60'])\n"
        "print(grandchild.pid, flush=True)\nsubprocess.run(['sleep', '60'])\n"
    )
    child = subprocess.Popen(
        child_processes.python_child(code), stdout=subprocess.PIPE, start_new_session=True
    )
    grandchild = int(child.stdout.readline())
    started = time.monotonic()
    child_processes.kill_group(child)
    child.communicate(timeout=10)  # no process holds its stdout open any more
    assert time.monotonic() - started < 5 and child.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_a_child_whose_parent_is_already_gone_exits():
    code = child_processes.GUARD.format(parent=1)  # not this process: as if the parent had died first
    done = subprocess.run([sys.executable, "-c", code + "print('ran')"], capture_output=True, text=True)
    assert done.returncode == 1 and "ran" not in done.stdout and "is gone" in done.stderr


def test_every_helper_process_starts_through_the_guard(monkeypatch):
    """The compile workers, the campaign's compile children and the check's child."""
    from triton_conv import compile_check
    from triton_conv.campaign import check_process, precompile

    guard = child_processes.GUARD.format(parent=os.getpid())
    started = []

    class Recorded:
        def __init__(self, argv, **kwargs):
            started.append(argv)
            assert kwargs.get("start_new_session") is True  # its group: kill_group reaches its compilers
            raise OSError("recorded only")

    for module in (compile_check, precompile, check_process):
        monkeypatch.setattr(module.subprocess, "Popen", Recorded)
    with pytest.raises(OSError):
        precompile.Child("record", {})
    with pytest.raises(OSError):
        check_process.CheckProcess("cpu")._start()
    monkeypatch.setattr(compile_check, "describe", lambda spec, capability: spec)
    with pytest.raises(OSError):
        compile_check.compile_specs(["job 1", "job 2"], 90, workers=2)
    assert len(started) == 3 and all(argv[1] == "-c" and argv[2].startswith(guard) for argv in started)


def test_sm90_compile_workers_are_no_more_than_the_usable_cores(monkeypatch):
    """`static-report --workers 500` started one child per job (309, each importing torch and
    Triton) on a 2-core machine: the workers are capped at the cores, as the campaign's are, and
    the reports still come back in the jobs' order."""
    import pickle

    from triton_conv import compile_check

    started = []

    class Worker:
        returncode = 0

        def __init__(self, argv, **kwargs):
            started.append(argv)

        def communicate(self, payload):
            return pickle.dumps([f"report of {job}" for job in pickle.loads(payload)]), b""

        def poll(self):
            return 0

        def wait(self):
            return 0

    monkeypatch.setattr(compile_check, "usable_cores", lambda: 2)
    monkeypatch.setattr(compile_check, "describe", lambda spec, capability: spec)
    monkeypatch.setattr(compile_check.subprocess, "Popen", Worker)
    jobs = [f"job {index}" for index in range(9)]
    assert compile_check.compile_specs(jobs, workers=500) == [f"report of {job}" for job in jobs]
    assert len(started) == 2

"""The two commands a GPU lease runs after the campaign, checked without a GPU.
scripts/gpu_followup.sh is valid bash, brings back no more files than the device tool returns (8),
and every program it calls accepts the arguments it is given (a renamed flag would cost the lease's
only run). scripts/gpu_tests.sh runs pytest with the arguments it is given and says in one line how
the run ended, stopped at its time limit included."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench import host_overhead, profile_step, since_campaign
from triton_conv import training_check

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_followup.sh"
TESTS_SCRIPT = SCRIPT.with_name("gpu_tests.sh")
MAX_FILES = 8  # what the device tool brings back from $OUT
PROGRAMS = {
    "bench/host_overhead.py": host_overhead.main,
    "bench/since_campaign.py": since_campaign.main,
    "bench/profile_step.py": profile_step.main,
    "triton_conv.training_check": training_check.main,
}


def _commands() -> list[list[str]]:
    """Each python3 call of the script as its argument list after the program, with the script's
    shell variables filled in as the script sets them."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    training = re.search(r"training=\((.*?)\)", text).group(1)
    text = text.replace('"${training[@]}"', training)
    calls = []
    for line in text.splitlines():
        found = re.search(r"python3 (-m )?(\S+) (.*?)(>|$)", line)
        if found and found.group(2) in PROGRAMS:
            words = shlex.split(found.group(3).replace('"$shape"', "1,8,8,8,8,3").replace("$OUT", "/out"))
            calls.append([found.group(2), *words])
    return calls


def test_the_script_is_valid_bash_and_brings_back_at_most_eight_files():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    files = set(re.findall(r"\$OUT/([\w.-]+)", SCRIPT.read_text()))
    # bench/since_campaign.py --out writes a .json beside its table.
    files |= {Path(name).with_suffix(".json").name for name in files if name.startswith("since_campaign")}
    assert len(files) <= MAX_FILES, sorted(files)


def test_every_program_the_script_runs_is_checked_here():
    """A program added to the script without a row in PROGRAMS would go unchecked."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    programs = {match[1] for match in re.findall(r"python3 (-m )?(\S+)", text)}
    assert programs <= set(PROGRAMS) | {"-c", "pytest"}, sorted(programs - set(PROGRAMS))


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_every_program_accepts_the_arguments_the_script_gives_it(program, monkeypatch):
    calls = [words[1:] for words in _commands() if words[0] == program]
    assert calls, f"the script no longer calls {program}"
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse(self, args, namespace)  # an unknown or malformed argument exits with status 2 here
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for argv in calls:
        with pytest.raises(_Parsed):
            PROGRAMS[program](argv)


def _run_gpu_tests(
    seconds: int, log: Path, workers: int, *pytest_arguments: str
) -> subprocess.CompletedProcess:
    """scripts/gpu_tests.sh with this interpreter as the `python3` it calls (on the GPU machine the
    image's own)."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TRITON_CONV_TEST_WORKERS": str(workers),
    }
    command = ["bash", str(TESTS_SCRIPT), str(seconds), str(log), *pytest_arguments]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)


def test_the_test_script_runs_the_tests_it_is_given_and_reports_their_summary(tmp_path):
    subprocess.run(["bash", "-n", str(TESTS_SCRIPT)], check=True)
    done = _run_gpu_tests(120, tmp_path / "log", 2, "tests/test_memo.py", "-k", "not nothing_matches_this")
    assert done.returncode == 0, done.stdout + done.stderr
    counted = len((tmp_path / "log").read_text().split(" PASSED ")) - 1
    assert counted >= 1 and f"{counted} passed in" in done.stdout, done.stdout


def test_the_test_script_stopped_at_its_limit_says_so(tmp_path):
    """Stopped by SIGINT as Ctrl-C would: pytest's summary of what ran, after `stopped at`."""
    done = _run_gpu_tests(3, tmp_path / "log", 0, "tests/test_fprop.py")
    assert done.returncode == 124, done.stdout + done.stderr
    assert done.stdout.startswith("gpu tests (exit 124): stopped at 3 s: "), done.stdout

"""output_files.check_writable, the check a command makes of its output before its long work: it
refuses a file made read-only, as `cp` without -f does, and anything that is not a file (a device,
a named pipe), and leaves no folder of its own behind."""

import os
import socket
import stat

import pytest

from triton_conv import cli, output_files
from triton_conv.output_files import UnwritableOutput, check_writable
from triton_conv.report.sweep_json import read_json


def _read_only(path):
    path.write_text("the kept report\n")
    path.chmod(0o444)
    return path


def test_a_read_only_file_is_refused(tmp_path):
    """os.replace replaced a 0444 file: only the folder's write permission counts. (As root, which
    os.access lets write anything, the mode bits say it is read-only.)"""
    target = _read_only(tmp_path / "report.md")
    with pytest.raises(UnwritableOutput, match=f"^{target} is read-only"):
        check_writable(str(target))
    assert target.read_text() == "the kept report\n"


def test_a_file_this_user_may_not_write_is_refused(tmp_path, monkeypatch):
    """Write bits set, but not for this user (another owner's 0644 file): os.access says so."""
    target = tmp_path / "report.md"
    target.write_text("another user's report\n")
    monkeypatch.setattr(output_files.os, "access", lambda path, mode: False)
    with pytest.raises(UnwritableOutput, match="is read-only"):
        check_writable(str(target))


def test_a_writable_file_and_a_link_pass(tmp_path):
    """A link is replaced by the writer, never written through: the file it names is not the output."""
    (tmp_path / "report.md").write_text("old\n")
    check_writable(str(tmp_path / "report.md"))
    (tmp_path / "link.md").symlink_to(_read_only(tmp_path / "kept.md"))
    check_writable(str(tmp_path / "link.md"))


def _special(tmp_path, kind: str) -> str:
    path = str(tmp_path / kind)
    if kind == "pipe":
        os.mkfifo(path)
    else:
        bound = socket.socket(socket.AF_UNIX)
        bound.bind(path)
        bound.close()
    return path


@pytest.mark.parametrize(("kind", "words"), [("pipe", "a named pipe"), ("socket", "a socket")])
def test_a_pipe_or_a_socket_is_refused_and_stays(tmp_path, kind, words):
    """A report renamed over /dev/null made it a plain file (the machine's!), and opening a named
    pipe to splice a note into it waited forever for a writer."""
    path = _special(tmp_path, kind)
    with pytest.raises(UnwritableOutput, match=f"^{path} is {words}"):
        check_writable(path)
    with pytest.raises(UnwritableOutput, match=f"^{path} is {words}"):
        output_files.write_whole(path, "text")
    assert not stat.S_ISREG(os.lstat(path).st_mode) and os.listdir(tmp_path) == [kind]


def test_a_device_is_refused():
    with pytest.raises(UnwritableOutput, match="^/dev/null is a device, not a file"):
        check_writable("/dev/null")  # a check: nothing is written, whatever it answers


def test_report_into_a_pipe_or_from_one_is_refused_without_waiting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = str(tmp_path / "note.md")
    os.mkfifo(pipe)
    with pytest.raises(SystemExit, match=f"^triton-conv report: {pipe} is a named pipe"):
        cli.main(["report", "--out", pipe, "--no-plots"])
    with pytest.raises(ValueError, match="not a regular file"):
        read_json(pipe)
    assert os.listdir(tmp_path) == ["note.md"]


@pytest.mark.parametrize("command", ["static-report", "sass-report"])
def test_a_read_only_out_stops_the_command_before_its_work(command, tmp_path, monkeypatch):
    from triton_conv import mainloop_report, static_report

    def compile_nothing(*args, **kwargs):
        raise AssertionError("compiled before the output was checked")

    monkeypatch.setattr(static_report, "static_rows", compile_nothing)
    monkeypatch.setattr(mainloop_report, "compile_rows", compile_nothing)
    target = _read_only(tmp_path / "report.md")
    with pytest.raises(SystemExit, match=f"^triton-conv {command}: {target} is read-only"):
        cli.main([command, "--out", str(target)])
    assert target.read_text() == "the kept report\n"


def test_a_read_only_note_is_not_replaced_by_report(tmp_path, monkeypatch):
    """`triton-conv report --out NOTE` splices into the note: a read-only one is refused in one line."""
    monkeypatch.chdir(tmp_path)  # no notes/sweeps/ here: the model's tables alone
    target = _read_only(tmp_path / "note.md")
    with pytest.raises(SystemExit, match=f"^triton-conv report: {target} is read-only"):
        cli.main(["report", "--out", str(target), "--no-plots"])
    assert target.read_text() == "the kept report\n"


def test_the_check_makes_no_folder(tmp_path):
    """check_writable made the parents; a command that then refused for another reason left them."""
    target = tmp_path / "notes" / "campaigns" / "h200" / "campaign.json"
    check_writable(str(target))
    assert os.listdir(tmp_path) == []
    output_files.write_whole(target, "{}\n")  # the writer makes them
    assert target.read_text() == "{}\n"


def test_a_parent_that_is_a_file_is_refused_and_nothing_made(tmp_path):
    (tmp_path / "notes").write_text("a file\n")
    with pytest.raises(UnwritableOutput, match="notes is not a folder"):
        check_writable(str(tmp_path / "notes" / "sweeps" / "h200.json"))
    assert os.listdir(tmp_path) == ["notes"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_ancestor_is_refused(tmp_path):
    (tmp_path / "locked").mkdir(mode=0o500)
    try:
        with pytest.raises(UnwritableOutput):
            check_writable(str(tmp_path / "locked" / "notes" / "report.md"))
    finally:
        (tmp_path / "locked").chmod(0o700)


def test_tune_refuses_a_read_only_table_before_it_tunes(tmp_path, monkeypatch):
    """`tune` checked only that its folder could be written: a read-only <device>.md was replaced
    after minutes of tuning. Both of the device's files are checked before the first timing."""
    from triton_conv import autotune_tables, tuning

    monkeypatch.setattr(autotune_tables.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tuning, "device_identity", lambda device: ("NVIDIA H200", None))

    def tuned(*args, **kwargs):
        raise AssertionError("tuned before the output was checked")

    monkeypatch.setattr(autotune_tables, "tune_layer_set", tuned)
    for name in ("nvidia-h200.md", "nvidia-h200.json"):
        table = tmp_path / name
        table.write_text("kept")
        table.chmod(0o444)
        with pytest.raises(UnwritableOutput, match="read-only"):
            autotune_tables.tune_and_write(out_dir=str(tmp_path), device="cuda:0", progress=False)
        assert table.read_text() == "kept"
        table.chmod(0o644)
        table.unlink()


@pytest.mark.parametrize("out", ["settings.json", "-", "notes", ".md", "sub/.MD", "sub.md/"])
def test_report_out_must_be_a_markdown_file(tmp_path, monkeypatch, out):
    """The report splices sections into --out: a JSON given by mistake got them appended (and was no
    longer JSON), and `--out -` wrote a file named '-' and the campaign's notes into the folder, as
    `--out .md` did (no note's name)."""
    from triton_conv.report.__main__ import main as report_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "settings.json").write_text('{"a": 1}')
    with pytest.raises(SystemExit, match=f"^triton-conv report: --out {out} is not a markdown file"):
        cli.main(["report", "--out", out, "--no-plots"])
    with pytest.raises(SystemExit, match=f"^python -m triton_conv.report model: --out {out} is not a"):
        report_main(["model", "--out", out])
    assert os.listdir(tmp_path) == ["settings.json"]
    assert (tmp_path / "settings.json").read_text() == '{"a": 1}'

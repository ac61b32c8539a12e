"""minihbt.files: atomic writes and one-line user errors."""
import subprocess
import sys

import pytest

from minihbt import files

def test_atomic_dir_keeps_the_old_directory_when_the_swap_fails(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    with files.atomic_dir(target) as d:
        (d / "a").write_text("old")
    real_replace, calls = files.os.replace, []

    def failing_second_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old moved aside; now the new one into place fails
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", failing_second_rename)
    with pytest.raises(OSError, match="disk full"):
        with files.atomic_dir(target) as d:
            (d / "a").write_text("new")
    monkeypatch.undo()
    assert (target / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or aside copy left


def test_atomic_write_bytes_replaces_whole_file_with_normal_mode(tmp_path):
    p = tmp_path / "x.json"
    files.atomic_write_bytes(p, b"one")
    files.atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two" and (p.stat().st_mode & 0o777) == 0o666 & ~files._umask()
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


def test_run_cli_turns_user_error_into_one_line_and_exit_2():
    code = ("from minihbt.files import UserError, run_cli\n"
            "def main(argv): raise UserError('--flag: expected a number, got x')\n"
            "run_cli(main)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == "error: --flag: expected a number, got x\n"

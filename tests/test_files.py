"""minihbt.io.files: atomic writes and one-line user errors."""
import os
import signal
import subprocess
import sys

import pytest

from minihbt.io import files

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
    code = ("from minihbt.io.files import UserError, run_cli\n"
            "def main(argv): raise UserError('--flag: expected a number, got x')\n"
            "run_cli(main)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == "error: --flag: expected a number, got x\n"


# A real process killed (SIGKILL) right after atomic_dir's first rename: the old directory is
# aside, the new one not yet in place.
KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from minihbt.io import files
target = Path(sys.argv[1])
real_replace = os.replace
def replace(src, dst):
    real_replace(src, dst)
    if Path(dst).name.startswith(f".{target.name}.old."):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
with files.atomic_dir(target) as d:
    (d / "a").write_text("new")
"""


def killed_between_renames(tmp_path):
    target = tmp_path / "ckpt"
    with files.atomic_dir(target) as d:
        (d / "a").write_text("old")
    p = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_RENAMES, str(target)], capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    return target


def test_point08_kill_between_renames_leaves_the_old_copy_that_recovery_puts_back(tmp_path):
    target = killed_between_renames(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "ckpt" not in names and len(names) == 2  # the old copy and the new, unpublished temporary
    old = files.old_copy(target)
    assert old is not None and old.name.startswith(".ckpt.old.") and (old / "a").read_text() == "old"
    assert files.recover_dir(target) == old  # as --resume (load_trainer_state) does
    assert (target / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # the dead writer's temporary is gone
    assert files.recover_dir(target) is None and files.old_copy(target) is None


def test_point08_the_next_save_after_such_a_kill_repairs_first(tmp_path):
    target = killed_between_renames(tmp_path)
    with files.atomic_dir(target) as d:
        (d / "a").write_text("newer")
    assert (target / "a").read_text() == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_point08_parent_directory_is_flushed_after_the_renames(tmp_path, monkeypatch):
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "ckpt"
    for text in ("old", "new"):
        with files.atomic_dir(target) as d:
            (d / "a").write_text(text)
        into_place = max(i for i, e in enumerate(events) if e == ("replace", str(target)))
        assert ("fsync", str(tmp_path)) in events[into_place:], events  # the renames reach the disk
        assert any(e[0] == "fsync" and e[1].endswith(".tmp/a") for e in events[:into_place])  # the data first
        events.clear()

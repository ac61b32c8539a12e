"""Small file helpers shared by every module: hashing, atomic writes, user errors.

Contract
- Every write that a later run may read (downloads, caches, checkpoints) goes through
  `atomic_write_bytes` / `atomic_dir`: the data lands in a temporary sibling first, is flushed
  to disk and renamed into place, so a crash never leaves a half-written file where a good one
  is expected. `atomic_dir` also repairs what a killed writer left (see there); `locked` is an
  exclusive lock between processes (fcntl.flock: POSIX systems), for builds several processes
  may start at once.
- `UserError` is a mistake of the user's (bad flag, bad file, wrong hash). Command-line entry
  points wrap their `main` in `run_cli`, which prints it as one line `error: ...` and exits 2,
  without a traceback. Anything else is a bug and keeps its traceback.
- `weights_only_refusal(e)`: torch.load(weights_only=True)'s several-line refusal of a pickle
  that holds more than tensors, as one clause for such a UserError; None for any other error.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator


class UserError(Exception):
    """A one-line, user-facing error: name the file, field or flag and what was expected."""


def weights_only_refusal(e: BaseException) -> str | None:
    """One clause for torch.load(weights_only=True)'s refusal (torch's own text is 4-5 lines
    telling the reader to load with weights_only=False, which would run the pickle's code)."""
    text = str(e)
    if "Weights only load failed" not in text:
        return None
    found = re.search(r"GLOBAL (\S+)", text)  # the first Python object torch would have had to build
    held = f" (it pickles {found.group(1)})" if found else ""
    return f"not a weights-only checkpoint{held}; it was not unpickled (only tensors and plain containers are read)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are `UserError`s: one line and exit 2, like any bad input."""

    def error(self, message: str):
        raise UserError(message)


def nonblank_text(value, where: str) -> str:
    """`value` if it is a non-blank string, else a UserError; `where` names the file, line and field."""
    if not isinstance(value, str):
        raise UserError(f"{where}: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise UserError(f"{where}: empty text")
    return value


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
        _fsync(path.parent)  # the rename itself survives a power cut
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)  # a directory too: its entries (names, renames) reach the disk
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a finished temporary file into place, with the mode a plain `open` would give it
    (mkstemp creates 0600)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[int]:
    """Hold an exclusive lock on `path` (a directory, or a lock file, created if missing); yields its fd.

    fcntl.flock: advisory, between processes and between separate opens within one process. The
    kernel drops it when its holder exits or is killed (kill -9 included): no crash leaves a
    stale lock. Locking a directory needs no extra file beside the data. A filesystem that cannot
    lock (NFS cannot lock a directory) gives no lock: what runs under it is then as safe as with
    one writer, which is what it was before locks.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _leftovers(path: Path) -> tuple[list[Path], list[Path]]:
    """Beside `path`: old copies `.<name>.old.<pid>` (oldest first) and temporaries
    `.<name>.<pid>-<8 chars>.tmp` whose writing process is gone, with what an atomic_dir *into*
    such a temporary left beside it (`..<name>.<pid>-<8 chars>.tmp.<...>`)."""
    name = re.escape(path.name)
    old, dead = [], []
    for p in path.parent.iterdir():
        if re.fullmatch(rf"\.{name}\.old\.\d+", p.name):
            old.append(p)
        elif (m := re.fullmatch(rf"\.+{name}\.(\d+)-[a-z0-9_]{{8}}\.tmp(\..*)?", p.name)) and not _alive(int(m[1])):
            dead.append(p)
    return sorted(old, key=lambda p: p.stat().st_mtime_ns), dead


def _repair(path: Path) -> Path | None:
    """Under the parent's lock: undo what a killed `atomic_dir(path)` left. Returns the old copy
    put back as `path`, if any."""
    old, dead = _leftovers(path)
    restored = None
    if old and not path.exists():
        restored = old.pop()  # the version in place when a swap was cut short between its renames
        os.replace(restored, path)
    for p in old + dead:
        shutil.rmtree(p, ignore_errors=True)
    return restored


def old_copy(path: str | os.PathLike) -> Path | None:
    """The previous version of `path` that an `atomic_dir` killed between its renames left, if
    `path` is missing (read-only: `recover_dir` or the next `atomic_dir` puts it back)."""
    path = Path(path)
    if path.exists() or not path.parent.is_dir():
        return None
    old, _ = _leftovers(path)
    return old[-1] if old else None


def recover_dir(path: str | os.PathLike) -> Path | None:
    """After a crash of `atomic_dir(path)`: put the previous version back if the crash fell between
    the two renames (returns the old copy's name it had), and delete dead writers' temporaries."""
    path = Path(path)
    if not path.parent.is_dir():
        return None
    with locked(path.parent):
        return _repair(path)


def remove_dir(path: str | os.PathLike) -> None:
    """Delete the directory `path` (and what a killed `atomic_dir(path)` left) so that no crash
    leaves a partial `path`: it becomes a temporary first, which a later clean-up deletes."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    with locked(path.parent):
        _repair(path)
        if not path.exists():
            return
        trash = _temporary(path)
        os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _temporary(path: Path) -> Path:
    # Named after this process: a temporary whose process is gone is garbage (see _leftovers).
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `path` as a whole.

    The new directory's files are flushed to disk, the previous `path` is renamed aside to
    `.<name>.old.<pid>`, the new one renamed into place and the parent directory flushed (so the
    renames survive a power cut too); only then is the old one deleted. If the second rename
    fails, the old one is put back.

    Crashes never leave a half-written `path`. A process killed while writing leaves its
    temporary `.<name>.<pid>-<8 chars>.tmp`; one killed between the two renames leaves no `path`
    and the previous version under `.<name>.old.<pid>`. The next `atomic_dir(path)` or
    `recover_dir(path)` puts that version back and deletes temporaries of processes that are gone.

    Several processes may replace `path` at once: the clean-up and the swap run under a lock on
    the parent directory, so each swap sees a consistent state, and the last swap wins.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent):
        _repair(path)
    tmp = _temporary(path)
    trash = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        for f in [tmp, *tmp.rglob("*")]:  # file contents and directory entries
            _fsync(f)
        with locked(path.parent) as parent:
            _repair(path)  # another writer killed mid-swap meanwhile: its old copy goes back first
            old = path.with_name(f".{path.name}.old.{os.getpid()}") if path.exists() else None
            if old is not None:
                os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                if old is not None:
                    os.replace(old, path)
                raise
            os.fsync(parent)  # the renames themselves reach the disk
            if old is not None:  # from here on garbage that no repair may put back
                trash = _temporary(path)
                os.replace(old, trash)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a command-line `main`; a `UserError` becomes one line on stderr and exit code 2,
    and a warning one line `warning: ...` (no source line: it is news for a user, not a developer)."""
    warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
    try:
        code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)

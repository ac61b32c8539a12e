"""Small file helpers shared by every module: hashing, atomic writes, user errors.

Contract
- Every write that a later run may read (downloads, caches, checkpoints) goes through
  `atomic_write_bytes` / `atomic_dir`: the data lands in a temporary sibling first and is
  renamed into place, so a crash never leaves a half-written file where a good one is expected.
- `UserError` is a mistake of the user's (bad flag, bad file, wrong hash). Command-line entry
  points wrap their `main` in `run_cli`, which prints it as one line `error: ...` and exits 2,
  without a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator


class UserError(Exception):
    """A one-line, user-facing error: name the file, field or flag and what was expected."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are `UserError`s: one line and exit 2, like any bad input."""

    def error(self, message: str):
        raise UserError(message)


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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `path` as a whole.

    The new directory's files are flushed to disk, the previous `path` is renamed aside, the new
    one renamed into place, and only then is the old one deleted; if the second rename fails,
    the old one is put back. So `path` never holds a half-written directory: after a crash it
    holds the old or the new one, or (killed between the two renames) the old one waits under
    `.<name>.old.<pid>` beside it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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

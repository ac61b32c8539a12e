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

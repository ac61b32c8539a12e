"""The package's layout: every module imports on its own, minihbt's imports form no cycle (late
imports inside functions included), no module grows past ~300 lines unless listed with a reason,
every module has its test file, and a non-editable install finds the packaged manifest."""
import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "minihbt"
MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")
MAX_LINES = 300
LONGER = {}  # module: why it may be longer than MAX_LINES


def imports_of(module: str) -> set[str]:
    """minihbt modules that `module` imports anywhere in its code ("minihbt" is the package itself)."""
    path = PKG / ("__init__.py" if module == "minihbt" else f"{module}.py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "minihbt" if node.level else (node.module or "")  # `from . import x`, `from .x import y`
            if node.level and node.module:
                base = f"minihbt.{node.module}"
            names = [f"{base}.{a.name}" if base == "minihbt" and (PKG / f"{a.name}.py").is_file() else base
                     for a in node.names]
        else:
            continue
        for n in names:
            if n == "minihbt" or n.startswith("minihbt."):
                found.add(n.split(".")[1] if "." in n else "minihbt")
    found.discard(module)
    return found


def test_every_module_imports_on_its_own():
    # One interpreter, each module imported with every other minihbt module forgotten first.
    code = ("import importlib, sys\n"
            f"for m in {MODULES!r}:\n"
            "    for k in [k for k in sys.modules if k == 'minihbt' or k.startswith('minihbt.')]:\n"
            "        del sys.modules[k]\n"
            "    importlib.import_module('minihbt.' + m)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_import_package_does_not_import_torch():
    r = subprocess.run([sys.executable, "-c", "import sys, minihbt; assert 'torch' not in sys.modules"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_imports_form_no_cycle():
    graph = {m: imports_of(m) for m in ["minihbt", *MODULES]}
    assert "text_encoder" in graph["minihbt"]  # the walk sees imports inside functions
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m)


def test_imports_follow_the_data_flow():
    # The few edges that the layout exists to keep pointing one way.
    graph = {m: imports_of(m) for m in MODULES}
    assert not graph["artifacts"] & {"convert", "text_encoder", "transformer", "hf_format", "lareqa"}
    assert not graph["transformer"] & {"hf_format", "text_encoder", "convert", "artifacts"}
    assert not graph["hf_format"] & {"text_encoder", "convert"}
    assert not graph["convert"] & {"text_encoder"}
    assert not any("data" in deps for m, deps in graph.items() if m != "data")  # data.py is a CLI only


def test_no_module_over_300_lines():
    long = {m: n for m in MODULES if (n := len((PKG / f"{m}.py").read_text().splitlines())) > MAX_LINES}
    assert set(long) <= set(LONGER), f"over {MAX_LINES} lines without a stated reason: {long}"


def test_every_module_has_its_test_file():
    missing = [m for m in MODULES if not (ROOT / "tests" / f"test_{m}.py").is_file()]
    assert not missing, f"no tests/test_<module>.py for {missing}"


def test_non_editable_install_finds_the_packaged_manifest(tmp_path, e5_dir):
    """pip install (not editable) into a target directory, then load e5-small from another
    directory: the manifest ships inside the package, byte for byte the top-level file."""
    src = tmp_path / "src"
    src.mkdir()
    # A copy of what the build reads, so the build writes nothing into the working tree.
    for name in ("pyproject.toml", "README.md", "data_manifest.json"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(PKG, src / "minihbt", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    # Offline with the environment's setuptools when it has one; else pip fetches it (a registry).
    offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *offline,
                        "--target", str(target), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    packaged = target / "minihbt" / "data_manifest.json"
    assert packaged.is_file() and not packaged.is_symlink()
    assert packaged.read_bytes() == (ROOT / "data_manifest.json").read_bytes()
    code = ("import minihbt, minihbt.artifacts as a; from minihbt import load_encoder\n"
            "assert minihbt.__file__.startswith(%r), minihbt.__file__\n"
            "print(sorted(a.manifest()))\n"
            "print(load_encoder('e5-small').encode(['Wo liegt Paris?']).shape)\n" % str(target))
    # e5-small from the session's cache (conftest's e5_dir fetched it): nothing is converted again
    env = {**os.environ, "PYTHONPATH": str(target), "MINIHBT_CACHE": str(e5_dir.parent.parent)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "'e5-small'" in r.stdout and "'xquad-r'" in r.stdout and "(1, 384)" in r.stdout

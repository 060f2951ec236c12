"""Wav inputs the README allows, read alike by the data reader (fsdd.audio, so training and the numpy
reference) and the C host program (search/deploy/templates/host_main.c): the same samples, or the
same one-line refusal. Multichannel 16-bit PCM is mixed down in integers on both sides; other
encodings are converted by `search.deploy --check` first; a recordings folder's files are each
used or named.

The C side needs `cc` and `make` (skipped without); the deploy tests also FSDD_DIR; the device
test gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm (skipped without them)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fsdd.audio import SAMPLE_RATE, list_wavs, read_wav, wav_layout
from fsdd.errors import DataError
from fsdd.splits import make_split
from search.deploy import deploy
from search.deploy.__main__ import main
from search.deploy.clips import host_inputs, pcm16
from search.deploy.runner import _parse
from search.deploy.synthetic import random_artifact
from search.deploy.toolchain import DEVICE_PACKAGES, device_tools_missing, make
from search.schema import from_dict

# The check's tolerance (tests/test_deploy.py): |C logit - numpy logit| <= ATOL + RTOL * |logit|.
ATOL, RTOL = 1e-4, 1e-4
HAVE_CC = shutil.which("cc") is not None and shutil.which("make") is not None
needs_cc = pytest.mark.skipif(not HAVE_CC, reason="needs cc and make")
DEVICE_MISSING = device_tools_missing()
needs_device = pytest.mark.skipif(
    DEVICE_MISSING is not None, reason=f"{DEVICE_MISSING}; the device tests need the Debian packages {DEVICE_PACKAGES}"
)
SMALL = {"n_fft": 256, "hop_length": 128, "n_mels": 20, "n_mfcc": 10}
MODEL = {"model": {"hidden_size": 4}, "features": SMALL, "quant": {"mode": "qat", "bits": 4, "scale": "po2"}}


# --------------------------------------------------------------------------- wav bytes


def chunk(cid: bytes, body: bytes, pad: bool = True, size: int | None = None) -> bytes:
    """One RIFF chunk; `pad`: the pad byte after an odd-sized body; `size`: a size field that lies."""
    return cid + struct.pack("<I", len(body) if size is None else size) + body + (b"\0" if pad and len(body) % 2 else b"")


PCM_GUID = bytes.fromhex("0100000000001000800000aa00389b71")


def fmt(
    tag: int = 1, channels: int = 1, rate: int = SAMPLE_RATE, bits: int = 16, align: int | None = None, guid: bytes | None = None
) -> bytes:
    align = channels * ((bits + 7) // 8) if align is None else align
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    if guid is not None:  # WAVE_FORMAT_EXTENSIBLE: cbSize 22, valid bits, channel mask, subformat
        body += struct.pack("<HHI", 22, min(bits, 16), 0) + guid
    return chunk(b"fmt ", body)


def riff(*chunks: bytes, size: int | None = None) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if size is None else size) + body


def sizes(data: bytes, riff_size: int, data_size: int) -> bytes:
    """A plain 44-byte-header wav with its RIFF and data size fields replaced."""
    assert data[36:40] == b"data"
    return data[:4] + struct.pack("<I", riff_size) + data[8:40] + struct.pack("<I", data_size) + data[44:]


RNG = np.random.default_rng(7)
N = 3000
S = np.clip(RNG.normal(0, 6000, N) + 9000 * np.sin(np.arange(N) * 0.07), -32768, 32766).astype(np.int16)  # <= 32766: S + 1 fits
T = RNG.integers(-32768, 32768, N).astype(np.int16)
U = RNG.integers(-32768, 32768, N).astype(np.int16)


def le16(*channels: np.ndarray) -> bytes:
    return np.stack(channels, axis=1).astype("<i2").tobytes()


def floor_mix(*channels: np.ndarray) -> np.ndarray:
    return (np.sum(np.stack(channels).astype(np.int64), axis=0) // len(channels)).astype(np.int16)


PLAIN = riff(fmt(), chunk(b"data", le16(S)))
FFMPEG_LIST = chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 14) + b"Lavf59.27.100\0")

# name -> (file bytes, the int16 samples both sides read)
SAME: dict[str, tuple[bytes, np.ndarray]] = {
    "plain": (PLAIN, S),
    "stereo, odd negative sums: floor, not truncation": (riff(fmt(channels=2), chunk(b"data", le16(S, S + 1))), S),
    "stereo": (riff(fmt(channels=2), chunk(b"data", le16(S, T))), floor_mix(S, T)),
    "three channels": (riff(fmt(channels=3), chunk(b"data", le16(S, T, U))), floor_mix(S, T, U)),
    "stereo with a partial last frame": (riff(fmt(channels=2), chunk(b"data", le16(S, T) + b"\1\2\3")), floor_mix(S, T)),
    "WAVE_FORMAT_EXTENSIBLE mono": (riff(fmt(0xFFFE, guid=PCM_GUID), chunk(b"data", le16(S))), S),
    "WAVE_FORMAT_EXTENSIBLE stereo": (riff(fmt(0xFFFE, channels=2, guid=PCM_GUID), chunk(b"data", le16(S, T))), floor_mix(S, T)),
    "12 bits in 16": (riff(fmt(bits=12, align=2), chunk(b"data", le16(S))), S),
    "fmt chunk of 18 bytes": (riff(chunk(b"fmt ", fmt()[8:] + b"\0\0"), chunk(b"data", le16(S))), S),
    "block align that lies": (riff(fmt(channels=2, align=2), chunk(b"data", le16(S, T))), floor_mix(S, T)),
    "LIST and fact before data": (riff(fmt(), FFMPEG_LIST, chunk(b"fact", struct.pack("<I", 7)), chunk(b"data", le16(S))), S),
    "JUNK before fmt": (riff(chunk(b"JUNK", bytes(28)), fmt(), chunk(b"data", le16(S))), S),
    "odd-sized chunk with its pad byte": (riff(fmt(), chunk(b"LIST", b"INFOx"), chunk(b"data", le16(S))), S),
    "odd data length, padded": (riff(fmt(), chunk(b"data", le16(S) + b"\7")), S),
    "a chunk after the data": (riff(fmt(), chunk(b"data", le16(S)), FFMPEG_LIST), S),
    "RIFF size short of the file": (riff(fmt(), chunk(b"data", le16(S)), size=36), S),
    "sizes 0xFFFFFFFF (ffmpeg to a pipe)": (riff(fmt(), FFMPEG_LIST, chunk(b"data", le16(S), size=0xFFFFFFFF), size=0xFFFFFFFF), S),
    "sizes 0xFFFFFFFF, stereo": (sizes(riff(fmt(channels=2), chunk(b"data", le16(S, T))), 0xFFFFFFFF, 0xFFFFFFFF), floor_mix(S, T)),
    "sizes 0": (sizes(PLAIN, 0, 0), S),
    "RIFF size 36, data size 0 (never updated)": (sizes(PLAIN, 36, 0), S),
    "sox to a pipe (0x7FFFF024, 0x7FFFF000)": (sizes(PLAIN, 0x7FFFF024, 0x7FFFF000), S),
    "data size 0xFFFFFFFF, a chunk after it read as samples": (
        riff(fmt(), chunk(b"data", le16(S) + b"LIST\2\0\0\0ab", size=0xFFFFFFFF)),
        np.concatenate([S, np.frombuffer(b"LIST\2\0\0\0ab", "<i2")]),
    ),
    "unknown size, cut short: the samples it has": (sizes(PLAIN, 0xFFFFFFFF, 0xFFFFFFFF)[: 44 + 2 * 1000 + 1], S[:1000]),
}
# The RIFF size counts the pad byte of an odd-sized data chunk that is not there: one byte short.
SAME["odd data length, RIFF size counts the missing pad byte"] = (riff(fmt(), chunk(b"data", le16(S) + b"\7"))[:-1], S)

# name -> (file bytes, the reason both give after "FILE: ")
REFUSED: dict[str, tuple[bytes, str]] = {
    "truncated data": (PLAIN[:2000], "truncated wav (2000 bytes on disk, its 'data' chunk ends at byte 6044)"),
    "truncated after the data (RIFF size)": (
        riff(fmt(), chunk(b"data", le16(S)), FFMPEG_LIST)[:6044],
        "truncated wav (6044 bytes on disk, header says 6078)",
    ),
    "truncated fmt chunk": (PLAIN[:30], "truncated wav (30 bytes on disk, its 'fmt ' chunk ends at byte 36)"),
    "cut inside the header": (PLAIN[:8], "not a RIFF/WAVE file"),
    "empty file": (b"", "not a RIFF/WAVE file"),
    "odd-sized chunk without its pad byte": (
        riff(fmt(), chunk(b"LIST", b"INFOx", pad=False), chunk(b"data", le16(S))),
        "corrupt wav (its 'LIST' chunk at byte 36 has an odd size, 5, and no pad byte after it)",
    ),
    "data before fmt": (riff(chunk(b"data", le16(S)), fmt()), "corrupt wav (data chunk before the fmt chunk)"),
    "two fmt chunks": (riff(fmt(), fmt(), chunk(b"data", le16(S))), "corrupt wav (a second fmt chunk at byte 36)"),
    "short fmt chunk": (
        riff(chunk(b"fmt ", fmt()[8:22]), chunk(b"data", le16(S))),
        "corrupt wav (fmt chunk of 14 bytes, expected at least 16)",
    ),
    "no data chunk": (riff(fmt(), FFMPEG_LIST), "corrupt wav (no data chunk)"),
    "no fmt chunk": (riff(FFMPEG_LIST), "corrupt wav (no fmt chunk)"),
    "short WAVE_FORMAT_EXTENSIBLE": (
        riff(fmt(0xFFFE), chunk(b"data", le16(S))),
        "corrupt wav (WAVE_FORMAT_EXTENSIBLE fmt chunk of 16 bytes, expected at least 40)",
    ),
    "0 channels": (riff(fmt(channels=0, align=2), chunk(b"data", le16(S))), "corrupt wav (its fmt chunk says 0 channels)"),
    "1025 channels": (riff(fmt(channels=1025), chunk(b"data", le16(S))), "1025 channels, more than 1024"),
    "unknown subformat": (
        riff(fmt(0xFFFE, guid=bytes(16)), chunk(b"data", le16(S))),
        "unsupported encoding (an unknown WAVE_FORMAT_EXTENSIBLE subformat): convert it, e.g. "
        "`ffmpeg -i IN -ar 8000 -c:a pcm_s16le OUT.wav` or `sox IN -r 8000 -b 16 OUT.wav`",
    ),
    "16-bit float": (riff(fmt(3), chunk(b"data", le16(S))), "unsupported encoding (16-bit float)"),
    "a format libsndfile does not decode": (riff(fmt(0x2201), chunk(b"data", le16(S))), "unsupported encoding (format 0x2201): convert it"),
    "16 kHz": (
        riff(fmt(rate=16000), chunk(b"data", le16(S))),
        "sample rate 16000 Hz, expected 8000 Hz (resample it first, e.g. `sox in.wav -r 8000 out.wav`)",
    ),
    "no samples": (riff(fmt(), chunk(b"data", b"")), "wav holds no samples"),
    "one byte of data": (riff(fmt(), chunk(b"data", b"\1")), "wav holds no samples"),
    "stereo, 3 bytes of data": (riff(fmt(channels=2), chunk(b"data", b"\1\2\3")), "wav holds no samples"),
    "31 s": (
        riff(fmt(), chunk(b"data", bytes(2 * 31 * SAMPLE_RATE))),
        "31.0 s long, over 30 s: a clip holds one spoken digit (cut it first)",
    ),
    "RF64": (b"RF64" + PLAIN[4:], "not a RIFF/WAVE file (RF64 data: convert it, e.g."),
    "FLAC named .wav": (b"fLaC" + bytes(100), "not a RIFF/WAVE file (FLAC data: convert it, e.g."),
    "garbage after the RIFF header": (riff(bytes(range(200))), "corrupt wav (no chunk id at byte 12: a chunk before it has a wrong size)"),
    "odd-sized chunk without its pad byte, before fmt": (
        riff(chunk(b"JUNK", b"abc", pad=False), fmt(), chunk(b"data", le16(S))),
        "corrupt wav (its 'JUNK' chunk at byte 12 has an odd size, 3, and no pad byte after it)",
    ),
    "a chunk size past the end of the file": (
        riff(fmt(), chunk(b"LIST", b"INFO", size=0x7FFFFFFF), chunk(b"data", le16(S))),
        "truncated wav (6056 bytes on disk, its 'LIST' chunk ends at byte 2147483691)",
    ),
}


# --------------------------------------------------------------------------- the C host program


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """build/kws_host of a small random model (None without cc)."""
    if not HAVE_CC:
        return None
    root = tmp_path_factory.mktemp("host")
    path = random_artifact(from_dict(MODEL), root / "m.safetensors")
    deploy(path, root / "lib", device_clips=0)
    make(root / "lib")
    return root / "lib" / "build" / "kws_host"


def run_c(host: Path, *paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(host), *map(str, paths)], capture_output=True, text=True, timeout=60)


def canonical(tmp_path: Path, x: np.ndarray) -> Path:
    path = tmp_path / "canonical.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="PCM_16")
    return path


@pytest.mark.parametrize("name", list(SAME))
def test_same_samples_both_sides(name: str, tmp_path: Path, host: Path | None) -> None:
    """read_wav gives the expected int16 samples / 32768 exactly; the C host program classifies the
    same samples (its logits equal, bit for bit, those of a plain mono wav of them)."""
    data, expect = SAME[name]
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    x = read_wav(path)
    assert x.dtype == np.float32 and x.shape == expect.shape
    np.testing.assert_array_equal(x * 32768, expect.astype(np.float32))
    np.testing.assert_array_equal(pcm16(path), expect)
    assert wav_layout(path).pcm16  # the host program reads it itself: --check converts nothing
    if host is None:
        pytest.skip("needs cc and make for the C side")
    got, ref = run_c(host, path), run_c(host, canonical(tmp_path, expect))
    assert got.returncode == 0 and got.stderr == "", got.stderr
    assert got.stdout.split()[1:] == ref.stdout.split()[1:] and len(got.stdout.split()) == 12


@pytest.mark.parametrize("name", list(REFUSED))
def test_same_refusal_both_sides(name: str, tmp_path: Path, host: Path | None) -> None:
    """read_wav and the C host program refuse the file in one line, with the same reason."""
    data, reason = REFUSED[name]
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    with pytest.raises(DataError) as e:
        read_wav(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {reason}"), msg
    if host is None:
        pytest.skip("needs cc and make for the C side")
    got = run_c(host, path)
    assert got.returncode == 2 and got.stdout == "" and got.stderr == f"error: {msg}\n"


def test_unreadable_paths_both_sides(tmp_path: Path, host: Path | None) -> None:
    (tmp_path / "dir.wav").mkdir()
    for path, reason in [(tmp_path / "gone.wav", "No such file or directory"), (tmp_path / "dir.wav", "Is a directory")]:
        with pytest.raises(DataError) as e:
            read_wav(path)
        assert str(e.value) == f"{path}: cannot read wav ({reason})"
        if host is not None:
            assert run_c(host, path).stderr == f"error: {e.value}\n"


def test_other_encodings_are_for_the_check_to_convert(tmp_path: Path, host: Path | None) -> None:
    """8/24/32-bit PCM and float: read_wav reads them (libsndfile), the host program names the
    encoding and refuses; pcm16 gives the samples the check converts them to."""
    x = (S.astype(np.float64) + RNG.uniform(-0.5, 0.5, N)) / 32768  # more than 16 bits of detail
    for subtype, kind in [("PCM_24", "24-bit PCM"), ("PCM_32", "32-bit PCM"), ("FLOAT", "32-bit float"), ("PCM_U8", "8-bit PCM")]:
        path = tmp_path / f"{subtype}.wav"
        sf.write(path, x, SAMPLE_RATE, subtype=subtype)
        lay = wav_layout(path)
        assert not lay.pcm16 and lay.describe() == kind
        y = read_wav(path)
        np.testing.assert_array_equal(pcm16(path), np.clip(np.rint(y.astype(np.float64) * 32768), -32768, 32767).astype(np.int16))
        if host is not None:
            got = run_c(host, path)
            assert got.returncode == 2 and got.stderr.startswith(f"error: {path}: {kind}, not 16-bit PCM"), got.stderr


def test_host_inputs_converts_only_what_the_host_cannot_read(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    a, b = src / "1_a_0.wav", src / "2_a_0.wav"
    sf.write(a, np.stack([S, T], 1), SAMPLE_RATE, subtype="PCM_16")
    sf.write(b, np.stack([S, T], 1) / 32768 + 1e-6, SAMPLE_RATE, subtype="PCM_24")
    paths, kinds = host_inputs([a, b], out)
    assert paths == [a, out / "2_a_0.wav"] and dict(kinds) == {"24-bit PCM": 1}
    assert sf.info(paths[1]).channels == 1 and sf.info(paths[1]).subtype == "PCM_16"
    np.testing.assert_array_equal(read_wav(paths[1]) * 32768, pcm16(b).astype(np.float32))


def test_names_with_spaces_parse(tmp_path: Path, host: Path | None) -> None:
    """A speaker name may hold a space: the host program's line is split from the right."""
    if host is None:
        pytest.skip("needs cc and make")
    path = tmp_path / "3_ann marie_0.wav"
    sf.write(path, S, SAMPLE_RATE, subtype="PCM_16")
    (res,) = _parse(run_c(host, path).stdout.splitlines())
    assert res.name == path.name and len(res.logits) == 10


# --------------------------------------------------------------------------- sox and libsndfile


@pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox")
def test_genuine_pipe_output_of_sox(tmp_path: Path, host: Path | None) -> None:
    """sox writing to a pipe from input of unknown length (its 0x7FFFF000 placeholder sizes)."""
    raw = tmp_path / "in.raw"
    raw.write_bytes(S.astype("<i2").tobytes())
    out = tmp_path / "piped.wav"
    cmd = f"cat {raw} | sox -t raw -r 8000 -e signed -b 16 -c 1 - -t wav - 2>/dev/null | cat > {out}"
    subprocess.run(cmd, shell=True, check=True, timeout=60)
    assert struct.unpack("<I", out.read_bytes()[40:44])[0] in (0x7FFFF000, 0xFFFFFFFF)  # not the real size
    np.testing.assert_array_equal(read_wav(out) * 32768, S.astype(np.float32))
    if host is not None:
        assert run_c(host, out).stdout.split()[1:] == run_c(host, canonical(tmp_path, S)).stdout.split()[1:]


def test_pipe_sizes_libsndfile_reads_the_samples(tmp_path: Path) -> None:
    """What libsndfile itself makes of the sizes: 0xFFFFFFFF (and sox's 0x7FFFF000) read to the end
    of the file; a data size of 0 reads as no samples, which read_wav overrides (to the end)."""
    for data_size, frames in [(0xFFFFFFFF, N), (0x7FFFF000, N), (0, 0)]:
        path = tmp_path / f"{data_size:x}.wav"
        path.write_bytes(sizes(PLAIN, 0xFFFFFFFF, data_size))
        assert sf.info(str(path)).frames == frames
        assert len(read_wav(path)) == N


# --------------------------------------------------------------------------- FSDD clips, folders


CLIP = "5_theo_3.wav"


def test_pipe_header_on_a_real_clip(fsdd_dir: Path, tmp_path: Path, host: Path | None) -> None:
    """The reported clip: RIFF and data sizes 0xFFFFFFFF (the header ffmpeg writes to a pipe) read
    as the same samples as the file itself, by both sides; the file cut short with real sizes is
    still refused as truncated, by both."""
    src = fsdd_dir / CLIP
    piped, cut = tmp_path / "piped.wav", tmp_path / "cut.wav"
    data = src.read_bytes()
    piped.write_bytes(sizes(data, 0xFFFFFFFF, 0xFFFFFFFF))
    cut.write_bytes(data[: len(data) // 2])
    np.testing.assert_array_equal(read_wav(piped), read_wav(src))
    with pytest.raises(DataError, match=r"cut\.wav: truncated wav \(\d+ bytes on disk, its 'data' chunk ends at byte") as e:
        read_wav(cut)
    if host is not None:
        assert run_c(host, piped).stdout.split()[1:] == run_c(host, src).stdout.split()[1:]
        assert run_c(host, cut).stderr == f"error: {e.value}\n"


def copy_clips(fsdd_dir: Path, folder: Path, speakers: tuple[str, ...] = ("jackson", "theo"), takes: range = range(2)) -> Path:
    folder.mkdir(parents=True)
    for d in range(10):
        for s in speakers:
            for t in takes:
                shutil.copy(fsdd_dir / f"{d}_{s}_{t}.wav", folder / f"{d}_{s}_{t}.wav")
    return folder


def test_upper_case_extension_is_used_and_in_the_split(fsdd_dir: Path, tmp_path: Path) -> None:
    data = copy_clips(fsdd_dir, tmp_path / "rec")
    before = make_split([f.name for f in list_wavs(data)], "random", 0)
    shutil.copy(fsdd_dir / CLIP, data / "5_theo_3.WAV")
    files = list_wavs(data)
    names = [f.name for f in files]
    assert "5_theo_3.WAV" in names and len(names) == 41
    sp = make_split(names, "random", 0)
    i = names.index("5_theo_3.WAV")
    assert i in {*sp.train, *sp.val, *sp.test}
    assert sp.hash != before.hash
    np.testing.assert_array_equal(read_wav(files[i]), read_wav(fsdd_dir / CLIP))


def test_same_clip_in_two_letter_cases_is_refused(tmp_path: Path) -> None:
    for name in ["1_a_0.wav", "1_a_0.WAV", "2_a_0.wav"]:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError) as e:
        list_wavs(tmp_path)
    msg = str(e.value)
    assert "1_a_0.wav" in msg and "1_a_0.WAV" in msg and "the same clip twice" in msg and "\n" not in msg


@pytest.mark.parametrize("ext", [".flac", ".FLAC", ".ogg", ".mp3", ".aiff", ".m4a"])
def test_other_audio_containers_are_named(tmp_path: Path, ext: str) -> None:
    """A clip in another container is refused in one line naming it and how to convert it; files
    that are not audio (README.md, MANIFEST.csv), hidden files and subfolders are ignored."""
    for name in ["0_a_0.wav", "README.md", "MANIFEST.csv", "._5_theo_3.flac"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.flac").mkdir()
    assert [f.name for f in list_wavs(tmp_path)] == ["0_a_0.wav"]
    clip = tmp_path / f"5_theo_3{ext}"
    if ext == ".flac":
        sf.write(clip, S, SAMPLE_RATE, format="FLAC")
    else:
        clip.write_bytes(b"\0" * 10)
    with pytest.raises(DataError) as e:
        list_wavs(tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{clip}: a {ext} file among the recordings") and "convert it" in msg and "sox" in msg and "\n" not in msg


# --------------------------------------------------------------------------- search.deploy --check


def fsdd_folder(fsdd_dir: Path, folder: Path) -> tuple[Path, list[Path], Path]:
    """40 real clips, the random split's test clips (10) in split order, and an artifact of that split."""
    copy_clips(fsdd_dir, folder)
    files = list_wavs(folder)
    sp = make_split([f.name for f in files], "random", 0)
    art = random_artifact(from_dict(MODEL), folder.parent / "m.safetensors", split_hash=sp.hash)
    return folder, [files[i] for i in sp.test], art


def first_per_digit(test: list[Path]) -> list[Path]:
    """The test clips pick() compiles into the device program first: the first of each digit."""
    seen: dict[str, Path] = {}
    for w in test:
        seen.setdefault(w.name[0], w)
    return [seen[d] for d in sorted(seen)]


def make_stereo(wav: Path) -> None:
    x, sr = sf.read(wav, dtype="int16")
    sf.write(wav, np.stack([x, (x.astype(np.int32) * 3 // 4 + 17).astype(np.int16)], 1), sr, subtype="PCM_16")


def check(capsys, art: Path, out: Path, data: Path, *flags: str) -> tuple[dict, list[str]]:
    rc = main([str(art), "--out", str(out), "--data-dir", str(data), "--check", *flags])
    o, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(o.splitlines()[-1]), err.splitlines()


@needs_cc
def test_stereo_clips_through_deploy_check(fsdd_dir: Path, tmp_path: Path, capsys) -> None:
    """The reported failure: five stereo clips in the split; `--check` used to fail with `not 16-bit
    mono PCM`. The host program now reads them (integer mixdown), converting nothing, and agrees
    with the numpy reference on every clip."""
    data, test, art = fsdd_folder(fsdd_dir, tmp_path / "rec")
    stereo = first_per_digit(test)[:5]
    for w in stereo:
        make_stereo(w)
    assert all(sf.info(w).channels == 2 for w in stereo)
    result, err = check(capsys, art, tmp_path / "lib", data)
    host = result["host"]
    assert host["n_clips"] == host["agree"] == 10 and host["converted"] == 0, host
    assert host["max_logit_diff"] <= ATOL + RTOL * 10, host
    assert not [ln for ln in err if "convert" in ln], err
    # The stereo clips bit for bit as their integer mixdown, and within the check's tolerance of the reference.
    lib_host = tmp_path / "lib" / "build" / "kws_host"
    for w in stereo:
        x, _ = sf.read(w, dtype="int16")
        mono = canonical(tmp_path, floor_mix(x[:, 0], x[:, 1]))
        assert run_c(lib_host, w).stdout.split()[1:] == run_c(lib_host, mono).stdout.split()[1:]


@needs_cc
def test_other_encodings_converted_with_a_note(fsdd_dir: Path, tmp_path: Path, capsys) -> None:
    """24-bit clips (one stereo) and a float one in the split: `--check` converts them to 16-bit
    mono (rounding), says so in one note, and compares host and reference on the converted samples."""
    data, test, art = fsdd_folder(fsdd_dir, tmp_path / "rec")
    first = first_per_digit(test)
    for w, subtype, channels in [(first[0], "PCM_24", 1), (first[1], "PCM_24", 2), (first[2], "FLOAT", 1)]:
        x, sr = sf.read(w, dtype="float64")
        x = x + RNG.uniform(-0.4, 0.4, len(x)) / 32768  # detail below 16 bits, for the rounding to matter
        sf.write(w, np.stack([x] * channels, 1), sr, subtype=subtype)
    result, err = check(capsys, art, tmp_path / "lib", data)
    host = result["host"]
    assert host["n_clips"] == host["agree"] == 10 and host["converted"] == 3, host
    assert host["max_logit_diff"] <= ATOL + RTOL * 10, host
    notes = [ln for ln in err if ln.startswith("note: ")]
    assert len(notes) == 1 and "3 of 10 clips converted to 16-bit mono PCM" in notes[0], err
    assert "2 24-bit PCM" in notes[0] and "1 32-bit float" in notes[0] and "reads 16-bit PCM only" in notes[0]


@needs_cc
@needs_device
def test_stereo_and_converted_clips_on_the_device(fsdd_dir: Path, tmp_path: Path, capsys) -> None:
    """`--device` with stereo and 24-bit clips compiled in: the Cortex-M4 build under QEMU gives the
    host's logits bit for bit on each."""
    data, test, art = fsdd_folder(fsdd_dir, tmp_path / "rec")
    first = first_per_digit(test)
    for w in first[:2]:
        make_stereo(w)
    x, sr = sf.read(first[2], dtype="float64")
    sf.write(first[2], np.stack([x, x / 2], 1) + 1e-5, sr, subtype="PCM_24")
    result, err = check(capsys, art, tmp_path / "lib", data, "--device", "--clips", "3")
    dev = result["device"]
    assert dev["n_clips"] == dev["same_logits"] == dev["same_pred"] == 3 and dev["converted"] == 1, dev
    assert result["host"]["agree"] == 10 and result["host"]["converted"] == 1

"""Reading FSDD wav files (soundfile, not torchaudio: torchaudio 2.9+ needs torchcodec/FFmpeg)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from fsdd.errors import DataError

SAMPLE_RATE = 8000
MAX_CLIP_SECONDS = 30  # FSDD's longest clip lasts 2.3 s


def _check_riff_size(path: Path) -> None:
    # libsndfile silently reads the remaining samples of a cut-off file, so compare the
    # RIFF header's declared size with the real one to catch truncated downloads/copies.
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        raise DataError(f"{path}: cannot read wav ({e.strerror})") from None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise DataError(f"{path}: not a RIFF/WAVE file")
    (riff_size,) = struct.unpack("<I", head[4:8])
    if riff_size + 8 > size:
        raise DataError(f"{path}: truncated wav ({size} bytes on disk, header says {riff_size + 8})")


def read_wav(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples in [-1, 1]. Raises DataError naming the file if it is unusable:
    missing, not RIFF/WAVE, truncated or corrupt, another sample rate, no samples, longer than
    MAX_CLIP_SECONDS, or any sample NaN or infinite (float wavs can hold them).

    A file at another sample rate is refused rather than resampled, so that the training
    pipeline and the numpy reference (search.verify) read exactly the same samples.
    """
    path = Path(path)
    _check_riff_size(path)
    try:
        with sf.SoundFile(path) as f:
            sr, frames = f.samplerate, f.frames
            if sr != sample_rate:
                resample = f"resample it first, e.g. `sox in.wav -r {sample_rate} out.wav`"
                raise DataError(f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz ({resample})")
            # Checked before reading: every clip is padded to the longest, so one long
            # recording would take all the memory (an hour: about 22 GB of padded MFCCs).
            if frames > MAX_CLIP_SECONDS * sr:
                raise DataError(
                    f"{path}: {frames / sr:.1f} s long, over {MAX_CLIP_SECONDS} s: a clip holds one spoken digit (cut it first)"
                )
            data = f.read(frames, dtype="float32", always_2d=True)  # ADPCM files are not seekable: give the count
    except sf.SoundFileError as e:
        raise DataError(f"{path}: corrupt or unreadable wav ({e})") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: wav holds no samples")
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        # A float64 sample beyond float32's range reads as inf, so the count covers those too.
        first = int(np.argmax(bad))
        raise DataError(f"{path}: {int(bad.sum())} non-finite samples (NaN or infinite), the first at sample {first} ({first / sr:.3f} s)")
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def trim_silence(x: np.ndarray, top_db: float | None, frame: int = 256, hop: int = 64) -> np.ndarray:
    """Cut leading and trailing frames whose RMS is more than `top_db` below the loudest frame.

    Written by hand (same rule as librosa.effects.trim) because librosa is not in the stack,
    and the numpy reference must reproduce it exactly.
    """
    if top_db is None or len(x) <= frame:
        return x
    n = 1 + (len(x) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    rms = np.sqrt(np.mean(np.square(x[idx], dtype=np.float64), axis=1))
    peak = rms.max()
    if peak <= 0:
        return x
    loud = np.flatnonzero(20.0 * np.log10(np.maximum(rms, 1e-12) / peak) > -top_db)
    start, end = loud[0] * hop, min(len(x), loud[-1] * hop + frame)
    return x[start:end]


_NAME = re.compile(r"([^_]*)_([^_]*)_([^_]*)")


def parse_name(name: str) -> tuple[int, str, int]:
    """`7_jackson_32.wav` -> (7, "jackson", 32). DataError naming the file unless the name is
    `{digit}_{speaker}_{take}.wav` with a label 0-9, a non-empty speaker and a take >= 0."""
    stem = Path(name).stem
    expected = "expected {digit}_{speaker}_{take}.wav: a digit 0-9, a speaker name, a take number >= 0"
    m = _NAME.fullmatch(stem)
    if not m:
        raise DataError(f"{name}: file name is not {{digit}}_{{speaker}}_{{take}}.wav")
    digit, speaker, take = m.groups()
    # ASCII digits only: int() would also take "+7", " 7" or other scripts' digits.
    if not re.fullmatch(r"[0-9]", digit):
        outside = re.fullmatch(r"[+-]?[0-9]+", digit) and not 0 <= int(digit) <= 9
        what = f"label {digit} is outside 0-9" if outside else f"label {digit!r} is not one digit 0-9"
        raise DataError(f"{name}: {what} ({expected})")
    if not speaker.strip():
        raise DataError(f"{name}: empty speaker name ({expected})")
    if not re.fullmatch(r"[0-9]+", take):
        raise DataError(f"{name}: take {take!r} is not a number >= 0 ({expected})")
    return int(digit), speaker, int(take)


def list_wavs(data_dir: str | Path) -> list[Path]:
    """All wav files of a recordings folder, sorted by name. DataError if there are none, if
    one is not a readable file, or if one is not named `{digit}_{speaker}_{take}.wav` (the
    label comes from the name: checked here, before any work, cached or not). Hidden files
    (e.g. macOS's `._0_george_0.wav` resource forks) are not recordings and are skipped."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data dir {data_dir} does not exist")
    files = sorted(f for f in data_dir.glob("*.wav") if not f.name.startswith("."))
    if not files:
        raise DataError(f"data dir {data_dir} holds no .wav files")
    broken = [f for f in files if not f.is_file()]
    if broken:
        raise DataError(f"{broken[0]}: not a readable file (broken link?)")
    for f in files:
        try:
            f.name.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8: names are hashed and written as text later
            raise DataError(f"{data_dir / ascii(f.name)[1:-1]}: file name is not valid UTF-8; rename it") from None
        parse_name(str(f))
    return files

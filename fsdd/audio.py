"""Reading FSDD wav files (soundfile, not torchaudio: torchaudio 2.9+ needs torchcodec/FFmpeg)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from fsdd.errors import DataError

SAMPLE_RATE = 8000


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
    """Mono float32 samples in [-1, 1]. Raises DataError naming the file if it is unusable.

    A file at another sample rate is refused rather than resampled, so that the training
    pipeline and the numpy reference (search.verify) read exactly the same samples.
    """
    path = Path(path)
    _check_riff_size(path)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except sf.SoundFileError as e:
        raise DataError(f"{path}: corrupt or unreadable wav ({e})") from None
    if sr != sample_rate:
        raise DataError(
            f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz (resample it first, e.g. `sox in.wav -r {sample_rate} out.wav`)"
        )
    if data.shape[0] == 0:
        raise DataError(f"{path}: wav holds no samples")
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


def parse_name(name: str) -> tuple[int, str, int]:
    """`7_jackson_32.wav` -> (7, "jackson", 32)."""
    try:
        digit, speaker, take = Path(name).stem.split("_")
        return int(digit), speaker, int(take)
    except ValueError:
        raise DataError(f"{name}: file name is not {{digit}}_{{speaker}}_{{take}}.wav") from None


def list_wavs(data_dir: str | Path) -> list[Path]:
    """All wav files of a recordings folder, sorted by name; DataError if there are none."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data dir {data_dir} does not exist")
    files = sorted(data_dir.glob("*.wav"))
    if not files:
        raise DataError(f"data dir {data_dir} holds no .wav files")
    broken = [f for f in files if not f.is_file()]
    if broken:
        raise DataError(f"{broken[0]}: not a readable file (broken link?)")
    return files

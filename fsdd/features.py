"""MFCC features and their on-disk cache (one file per feature configuration and data set)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio
from safetensors.torch import load_file, save_file

from fsdd.audio import SAMPLE_RATE, list_wavs, read_wav, trim_silence
from fsdd.download import default_cache_dir
from fsdd.errors import DataError
from fsdd.files import atomic_write

CACHE_VERSION = 2  # bump when the feature computation itself changes


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that determines the features of a clip. Part of every cache key and artifact."""

    sample_rate: int = SAMPLE_RATE
    n_mfcc: int = 13
    n_fft: int = 400  # 50 ms window at 8 kHz (torchaudio's MFCC default)
    win_length: int | None = None  # None: n_fft
    hop_length: int = 200  # 25 ms: short sequences train better here than 10 ms hops (measured)
    n_mels: int = 40
    f_min: float = 0.0
    f_max: float | None = None  # None: sample_rate / 2
    top_db: float = 80.0  # dynamic range of the log-mel spectrogram (torchaudio's MFCC default)
    trim_db: float | None = 40.0  # silence trimming threshold; None disables trimming

    def __post_init__(self) -> None:
        if self.n_mfcc < 1 or self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc must be in 1..n_mels ({self.n_mels}), got {self.n_mfcc}")
        if self.trim_db is not None and self.trim_db <= 0:
            raise ValueError(f"trim_db must be > 0 dB (or null to disable trimming), got {self.trim_db}")
        if self.hop_length < 1 or self.n_fft < 2:
            raise ValueError("hop_length must be >= 1 and n_fft >= 2")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def mfcc_transform(cfg: FeatureConfig) -> torchaudio.transforms.MFCC:
    m = torchaudio.transforms.MFCC(
        sample_rate=cfg.sample_rate,
        n_mfcc=cfg.n_mfcc,
        log_mels=False,
        melkwargs={
            "n_fft": cfg.n_fft,
            "win_length": cfg.win_length,
            "hop_length": cfg.hop_length,
            "n_mels": cfg.n_mels,
            "f_min": cfg.f_min,
            "f_max": cfg.f_max,
            "center": True,
            "pad_mode": "reflect",
            "power": 2.0,
            "norm": None,
            "mel_scale": "htk",
        },
    )
    # MFCC fixes top_db at 80 in its constructor; set ours.
    m.top_db = cfg.top_db
    m.amplitude_to_DB = torchaudio.transforms.AmplitudeToDB("power", cfg.top_db)
    return m


def prepare_samples(x: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Trim silence, then zero-pad clips shorter than one FFT window (reflect padding needs it)."""
    x = trim_silence(x, cfg.trim_db)
    if len(x) < cfg.n_fft:
        x = np.pad(x, (0, cfg.n_fft - len(x)))
    return x


def clip_features(x: np.ndarray, cfg: FeatureConfig, mfcc: torchaudio.transforms.MFCC | None = None) -> torch.Tensor:
    """(frames, n_mfcc) float32 MFCCs of one clip. Computed per clip: top_db clamps per input."""
    mfcc = mfcc or mfcc_transform(cfg)
    with torch.no_grad():
        return mfcc(torch.from_numpy(prepare_samples(x, cfg))).T.contiguous()


def _fingerprint(files: list[Path]) -> str:
    # Names, sizes and mtimes: cheap, and changes whenever a file is replaced or added.
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(files: list[Path], cfg: FeatureConfig) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "cfg": cfg.to_dict(), "data": _fingerprint(files)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_features(data_dir: str | Path, cfg: FeatureConfig, cache_dir: str | Path | None = None) -> tuple[list[str], list[torch.Tensor]]:
    """File names and per-clip MFCCs of every wav in `data_dir`, from the cache when possible.

    A miss computes all clips, then writes the cache file atomically (temp file + rename),
    so an interrupted run never leaves a half-written cache behind.
    """
    files = list_wavs(data_dir)
    cache_dir = Path(cache_dir or default_cache_dir()) / "features"
    path = cache_dir / f"mfcc-{cache_key(files, cfg)}.safetensors"
    if path.exists():
        try:
            return _read_cache(path)
        except Exception:  # unreadable cache: recompute and overwrite below
            pass
    mfcc = mfcc_transform(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-clip ops are tiny: thread hand-off would dominate
    try:
        feats = [clip_features(read_wav(f, cfg.sample_rate), cfg, mfcc) for f in files]
    finally:
        torch.set_num_threads(threads)
    names = [f.name for f in files]
    _write_cache(path, names, feats, cfg)
    return names, feats


def _write_cache(path: Path, names: list[str], feats: list[torch.Tensor], cfg: FeatureConfig) -> None:
    lengths = torch.tensor([0] + [len(f) for f in feats], dtype=torch.int64)
    tensors = {"features": torch.cat(feats), "offsets": torch.cumsum(lengths, 0)}
    meta = {"names": json.dumps(names), "config": json.dumps(cfg.to_dict())}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _read_cache(path: Path) -> tuple[list[str], list[torch.Tensor]]:
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        names = json.loads(f.metadata()["names"])
    t = load_file(path)
    offsets = t["offsets"].tolist()
    feats = list(torch.tensor_split(t["features"], offsets[1:-1]))
    if len(feats) != len(names):
        raise DataError(f"feature cache {path} is inconsistent")
    return names, feats

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
from fsdd.augment import Variant
from fsdd.download import default_cache_dir
from fsdd.errors import DataError
from fsdd.files import atomic_write

CACHE_VERSION = 2  # bump when the feature computation itself changes


CMVN_KINDS = ("none", "mean", "meanvar")
CMVN_EPS = 1e-5  # floor of a clip's per-coefficient standard deviation in meanvar CMVN


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
    top_db: float | None = 80.0  # dynamic range of the log-mel spectrogram (torchaudio's MFCC default); None: no clamp
    trim_db: float | None = 40.0  # silence trimming threshold; None disables trimming
    cmvn: str = "none"  # per-utterance cepstral normalisation: none | mean | meanvar (applied after the cache)

    def __post_init__(self) -> None:
        problem = feature_problem(self)
        if problem:
            raise ValueError(problem)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def feature_problem(c: FeatureConfig) -> str | None:
    """The first field of `c` outside its allowed range, as one line naming it (None if valid)."""
    nyquist = c.sample_rate / 2
    f_max = nyquist if c.f_max is None else c.f_max
    win = c.win_length or c.n_fft
    checks = [
        (c.sample_rate == SAMPLE_RATE, f"sample_rate must be {SAMPLE_RATE} (FSDD's rate; wavs are not resampled), got {c.sample_rate}"),
        (c.n_fft >= 16, f"n_fft must be >= 16 samples, got {c.n_fft}"),
        (c.win_length is None or 1 <= c.win_length <= c.n_fft, f"win_length must be in 1..n_fft ({c.n_fft}) or null, got {c.win_length}"),
        (1 <= c.hop_length <= win, f"hop_length must be in 1..win_length ({win}), got {c.hop_length}"),
        (1 <= c.n_mels <= c.n_fft // 2 + 1, f"n_mels must be in 1..n_fft/2+1 ({c.n_fft // 2 + 1}), got {c.n_mels}"),
        (1 <= c.n_mfcc <= c.n_mels, f"n_mfcc must be in 1..n_mels ({c.n_mels}), got {c.n_mfcc}"),
        (0 <= c.f_min < f_max, f"f_min must be in [0, f_max) = [0, {f_max:g}) Hz, got {c.f_min:g}"),
        (f_max <= nyquist, f"f_max must be <= sample_rate/2 = {nyquist:g} Hz (or null), got {f_max:g}"),
        (c.top_db is None or c.top_db > 0, f"top_db must be > 0 dB (or null for no clamp), got {c.top_db}"),
        (c.trim_db is None or c.trim_db > 0, f"trim_db must be > 0 dB (or null to disable trimming), got {c.trim_db}"),
        (c.cmvn in CMVN_KINDS, f"cmvn must be one of {', '.join(CMVN_KINDS)}, got {c.cmvn!r}"),
    ]
    return next((msg for ok, msg in checks if not ok), None)


def apply_cmvn(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-utterance cepstral mean (and variance) normalisation of one clip's (T, n_mfcc) MFCCs:
    subtract each coefficient's mean over the clip's frames; `meanvar` also divides by its
    population standard deviation, floored at CMVN_EPS. Removes a fixed channel/voice colouring
    (Viikki & Laurila, 1998). Computed in float64, returned in float32."""
    if kind == "none":
        return x
    x64 = x.double()
    mean = x64.mean(0, keepdim=True)
    out = x64 - mean
    if kind == "meanvar":
        out = out / out.pow(2).mean(0, keepdim=True).sqrt().clamp_min(CMVN_EPS)
    return out.float()


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


def prepare_samples(x: np.ndarray, cfg: FeatureConfig, variant: Variant | None = None, name: str = "") -> np.ndarray:
    """Trim silence, then zero-pad clips shorter than one FFT window (reflect padding needs it).
    A training `variant` speeds the clip up before trimming (it changes the clip's length) and
    adds its noise after (so that the noise does not keep the silence from being trimmed)."""
    if variant is not None:
        x = variant.speed_up(x, cfg.sample_rate)
    x = trim_silence(x, cfg.trim_db)
    if variant is not None:
        x = variant.add_noise(x, name)
    if len(x) < cfg.n_fft:
        x = np.pad(x, (0, cfg.n_fft - len(x)))
    return x


def clip_features(
    x: np.ndarray,
    cfg: FeatureConfig,
    mfcc: torchaudio.transforms.MFCC | None = None,
    variant: Variant | None = None,
    name: str = "",
) -> torch.Tensor:
    """(frames, n_mfcc) float32 MFCCs of one clip. Computed per clip: top_db clamps per input."""
    mfcc = mfcc or mfcc_transform(cfg)
    with torch.no_grad():
        return mfcc(torch.from_numpy(prepare_samples(x, cfg, variant, name))).T.contiguous()


def _fingerprint(files: list[Path]) -> str:
    # Names, sizes and mtimes: cheap, and changes whenever a file is replaced or added.
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(files: list[Path], cfg: FeatureConfig, variant: Variant | None = None) -> str:
    # CMVN is applied after the cache: clips that differ only in it share one cache file.
    raw = {k: v for k, v in cfg.to_dict().items() if k != "cmvn"}
    key = {"v": CACHE_VERSION, "cfg": raw, "data": _fingerprint(files)}
    if variant is not None and variant != Variant():
        key["variant"] = variant.key()
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_features(
    data_dir: str | Path,
    cfg: FeatureConfig,
    cache_dir: str | Path | None = None,
    variant: Variant | None = None,
) -> tuple[list[str], list[torch.Tensor]]:
    """File names and per-clip MFCCs (before CMVN) of every wav in `data_dir`, from the cache
    when possible; with `variant`, of that augmented version of every clip (fsdd.augment).

    A miss computes all clips, then writes the cache file atomically (temp file + rename),
    so an interrupted run never leaves a half-written cache behind.
    """
    files = list_wavs(data_dir)
    variant = variant or Variant()
    cache_dir = Path(cache_dir or default_cache_dir()) / "features"
    path = cache_dir / f"mfcc-{cache_key(files, cfg, variant)}.safetensors"
    if path.exists():
        try:
            return _read_cache(path)
        except Exception:  # unreadable cache: recompute and overwrite below
            pass
    mfcc = mfcc_transform(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-clip ops are tiny: thread hand-off would dominate
    try:
        feats = [clip_features(read_wav(f, cfg.sample_rate), cfg, mfcc, variant, f.name) for f in files]
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

"""MFCC features and their on-disk cache (one file per feature configuration and data set)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torchaudio
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from fsdd.audio import list_wavs, read_wav, trim_silence
from fsdd.augment import Variant
from fsdd.download import default_cache_dir
from fsdd.errors import DataError
from fsdd.files import atomic_write
from fsdd.perturb import CHAIN_VERSION, rerecord, rir_bank, vtlp_filterbank
from fsdd.schema import FeatureConfig

CACHE_VERSION = 3  # bump when the feature computation itself changes (3: integer mixdown of multichannel 16-bit PCM)


CMVN_EPS = 1e-5  # floor of a clip's per-coefficient standard deviation in meanvar CMVN


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with `n` torch intra-op threads, then restore the previous setting. Per-clip
    ops (MFCCs, resampling) are tiny: with several threads, thread hand-off dominates them."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    A training `variant` speeds the clip up and adds its noise before trimming, as a noisy
    recording would be: the noise floor then limits the trimming as it does in real ones."""
    if variant is not None:
        x = variant.add_noise(variant.speed_up(x, cfg.sample_rate), name)
    x = trim_silence(x, cfg.trim_db)
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
    so an interrupted run never leaves a half-written cache behind. A cache file that cannot
    be read or does not hold finite features of exactly these clips is recomputed, with a
    one-line warning on stderr. Raises DataError naming the first unusable clip (fsdd.audio).
    """
    files = list_wavs(data_dir)
    names = [f.name for f in files]
    variant = variant or Variant()
    cache_dir = Path(cache_dir or default_cache_dir()) / "features"
    path = cache_dir / f"mfcc-{cache_key(files, cfg, variant)}.safetensors"
    if path.exists():
        try:
            return names, _read_cache(path, names, cfg)
        except (SafetensorError, OSError, _UnusableCache) as e:
            reason = (str(e) or type(e).__name__).splitlines()[0]
            print(f"warning: feature cache {path} cannot be used ({reason}); recomputing it", file=sys.stderr)
    # Tempo: frames taken further apart (or closer; at most a window apart), each frame's spectrum unchanged.
    hop = min(round(cfg.hop_length * variant.tempo), cfg.win_length or cfg.n_fft)
    mfcc = mfcc_transform(dataclasses.replace(cfg, hop_length=hop))
    with torch_threads(1):
        if variant.chain is not None:  # re-recorded audio (cached once for every front end), then the usual front end
            warps: dict[float, torchaudio.transforms.MFCC] = {}  # VTLP-warped copies of `mfcc`, by alpha
            audio = rerecorded(files, variant.chain, cache_dir.parent, cfg.sample_rate)
            feats = [_finite(f, clip_features(y, cfg, warped(mfcc, alpha, warps)), y) for f, (y, alpha) in zip(files, audio, strict=True)]
        else:
            feats = [_checked_clip_features(f, cfg, mfcc, variant) for f in files]
    _write_cache(path, names, feats, cfg)
    return names, feats


def warped(mfcc: torchaudio.transforms.MFCC, alpha: float, cache: dict[float, torchaudio.transforms.MFCC]) -> torchaudio.transforms.MFCC:
    """`mfcc` with its mel filterbank warped by VTLP factor `alpha` (fsdd.perturb.vtlp_filterbank), one per alpha."""
    if alpha == 1.0:
        return mfcc
    if alpha not in cache:
        m = copy.deepcopy(mfcc)
        m.MelSpectrogram.mel_scale.fb = vtlp_filterbank(mfcc.MelSpectrogram.mel_scale.fb, alpha, mfcc.sample_rate)
        cache[alpha] = m
    return cache[alpha]


def _checked_clip_features(path: Path, cfg: FeatureConfig, mfcc: torchaudio.transforms.MFCC, variant: Variant) -> torch.Tensor:
    x = read_wav(path, cfg.sample_rate)
    return _finite(path, clip_features(x, cfg, mfcc, variant, path.name), x)


def _finite(path: Path, feats: torch.Tensor, x: np.ndarray) -> torch.Tensor:
    if not torch.isfinite(feats).all():
        # Finite samples overflow float32's power spectrum only far beyond full scale (~1e19).
        peak = float(np.abs(x).max())
        raise DataError(f"{path}: its MFCCs are not finite (peak sample {peak:.3g}; wav samples belong in [-1, 1])")
    return feats


def rerecorded(files: list[Path], index: int, cache_dir: Path, sample_rate: int) -> list[tuple[np.ndarray, float]]:
    """Chain `index` of every clip of `files` (fsdd.perturb.rerecord): its samples and VTLP factor,
    computed once and cached in `cache_dir`/rerecorded/ as 16-bit samples (a file that cannot be
    read is recomputed): rooms and pitch shifts cost far more than a front end's MFCCs."""
    key = hashlib.sha256(json.dumps({"data": _fingerprint(files), "chain": index, "v": CHAIN_VERSION, "sr": sample_rate}).encode())
    path = cache_dir / "rerecorded" / f"chain-{key.hexdigest()[:16]}.safetensors"
    try:
        t = load_file(path)
        offsets, alphas = t["offsets"].tolist(), t["alpha"].tolist()
        samples = t["samples"].numpy().astype(np.float32) / 32768.0
        if len(alphas) == len(files):
            return [(samples[a:b], alpha) for a, b, alpha in zip(offsets[:-1], offsets[1:], alphas, strict=True)]
    except (SafetensorError, OSError, KeyError):
        pass
    rirs = rir_bank(cache_dir, sample_rate)
    out = [rerecord(read_wav(f, sample_rate), f.name, index, sample_rate, rirs) for f in files]
    pcm = [np.clip(np.rint(y * 32768.0), -32768, 32767).astype(np.int16) for y, _ in out]  # as a 16-bit recording holds it
    tensors = {
        "samples": torch.from_numpy(np.concatenate(pcm)),
        "offsets": torch.tensor(np.cumsum([0] + [len(p) for p in pcm]), dtype=torch.int64),
        "alpha": torch.tensor([a for _, a in out], dtype=torch.float64),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp))
    return [(p.astype(np.float32) / 32768.0, a) for p, (_, a) in zip(pcm, out, strict=True)]


def _write_cache(path: Path, names: list[str], feats: list[torch.Tensor], cfg: FeatureConfig) -> None:
    lengths = torch.tensor([0] + [len(f) for f in feats], dtype=torch.int64)
    tensors = {"features": torch.cat(feats), "offsets": torch.cumsum(lengths, 0)}
    meta = {"names": json.dumps(names), "config": json.dumps(cfg.to_dict())}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


class _UnusableCache(Exception):
    """A cache file that reads but does not hold what its key promises: it is recomputed."""


def _read_cache(path: Path, names: list[str], cfg: FeatureConfig) -> list[torch.Tensor]:
    """The per-clip features of the cache file `path`, checked against the clips `names`.
    Raises SafetensorError or OSError if it cannot be read, _UnusableCache if it is inconsistent."""
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    try:
        cached = json.loads(meta.get("names", "null"))
    except json.JSONDecodeError:
        cached = None
    if cached != names:
        raise _UnusableCache("its clip names are not the data's")
    t = load_file(path)
    feats, offsets = t.get("features"), t.get("offsets")
    if feats is None or offsets is None:
        raise _UnusableCache(f"tensors {sorted(t)}, expected features and offsets")
    if feats.dtype != torch.float32 or feats.ndim != 2 or feats.shape[1] != cfg.n_mfcc:
        raise _UnusableCache(f"features are {feats.dtype} {tuple(feats.shape)}, expected float32 (frames, {cfg.n_mfcc})")
    # Every clip has at least one frame: offsets rise strictly from 0 to the frame count.
    ok = offsets.dtype == torch.int64 and offsets.shape == (len(names) + 1,)
    if not ok or offsets[0] != 0 or offsets[-1] != len(feats) or bool((offsets.diff() < 1).any()):
        raise _UnusableCache("clip offsets do not match the features")
    if not torch.isfinite(feats).all():
        raise _UnusableCache("non-finite features")
    return list(torch.tensor_split(feats, offsets[1:-1].tolist()))

"""Reference inference from the artifact alone: `python -m search.verify ARTIFACT`.

Reads only the artifact (search.artifact.read + dense_weights) and the wav files, and
computes features (MFCC) and the LSTM + Linear forward pass in numpy, one clip at a time,
as docs/artifact.md specifies them. Neither torch nor torchaudio is used for any number
(they get imported, unused, through search.config). Prints one JSON line last:

    {"test_acc": ..., "size_bytes": ..., "n_test": ..., "agree": ..., ...}

`agree` is the fraction of test clips on which these predictions equal the torch model's,
read from `--predictions FILE` or `predictions.json` beside the artifact (null if neither).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fsdd.audio import list_wavs, parse_name, read_wav, trim_silence
from fsdd.download import resolve_data_dir
from fsdd.errors import DataError
from fsdd.splits import make_split
from search.artifact import ArtifactError, dense_weights, payload_bytes, read, validate

N_CLASSES = 10
AMIN = 1e-10  # torchaudio AmplitudeToDB("power") clamps the power here before log10


class VerifyError(ValueError):
    """A problem outside the artifact and the wavs (e.g. an unreadable predictions file)."""


# --------------------------------------------------------------------------- features


@dataclasses.dataclass(frozen=True)
class _Params:
    sample_rate: int
    n_mfcc: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    f_min: float
    f_max: float
    top_db: float | None
    trim_db: float | None
    cmvn: str


def _params(p: Mapping[str, Any] | Any) -> _Params:
    """Feature parameters from the artifact's `features` dict (or a FeatureConfig), defaults resolved."""
    if not isinstance(p, Mapping):
        p = dataclasses.asdict(p)
    sr, n_fft = int(p["sample_rate"]), int(p["n_fft"])
    win = p.get("win_length")
    f_max = p.get("f_max")
    top_db, trim_db = p.get("top_db", 80.0), p.get("trim_db")
    return _Params(
        sample_rate=sr,
        n_mfcc=int(p["n_mfcc"]),
        n_fft=n_fft,
        win_length=n_fft if win is None else int(win),
        hop_length=int(p["hop_length"]),
        n_mels=int(p["n_mels"]),
        f_min=float(p.get("f_min", 0.0)),
        f_max=float(sr // 2) if f_max is None else float(f_max),
        top_db=None if top_db is None else float(top_db),
        trim_db=None if trim_db is None else float(trim_db),
        cmvn=str(p.get("cmvn", "none")),  # format version 1 has no cmvn: none
    )


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray | float:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def _window(p: _Params) -> np.ndarray:
    """Periodic Hann window of win_length, zero-padded on both sides to n_fft (as torch.stft)."""
    n = np.arange(p.win_length, dtype=np.float64)
    w = 0.5 - 0.5 * np.cos(2.0 * math.pi * n / p.win_length)
    left = (p.n_fft - p.win_length) // 2
    return np.pad(w, (left, p.n_fft - p.win_length - left))


@lru_cache(maxsize=8)
def mel_filterbank(p: _Params) -> np.ndarray:
    """(n_fft//2+1, n_mels) triangular HTK-mel filters without area normalization
    (torchaudio.functional.melscale_fbanks with norm=None, mel_scale="htk")."""
    n_freqs = p.n_fft // 2 + 1
    all_freqs = np.linspace(0.0, p.sample_rate // 2, n_freqs)
    m_pts = np.linspace(_hz_to_mel(p.f_min), _hz_to_mel(p.f_max), p.n_mels + 2)
    f_pts = _mel_to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up))


@lru_cache(maxsize=8)
def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_mfcc) orthonormal DCT-II matrix (torchaudio.functional.create_dct, norm="ortho")."""
    n = np.arange(n_mels, dtype=np.float64)
    k = np.arange(n_mfcc, dtype=np.float64)[:, None]
    dct = np.cos(math.pi / n_mels * (n + 0.5) * k)
    dct[0] *= 1.0 / math.sqrt(2.0)
    dct *= math.sqrt(2.0 / n_mels)
    return dct.T


def prepare(x: np.ndarray, feature_params: Mapping[str, Any] | Any) -> np.ndarray:
    """Trim leading/trailing silence, then zero-pad at the end to at least n_fft samples."""
    p = _params(feature_params)
    x = trim_silence(np.asarray(x, dtype=np.float32), p.trim_db)
    if len(x) < p.n_fft:
        x = np.pad(x, (0, p.n_fft - len(x)))
    return x


def cmvn(m: np.ndarray, kind: str) -> np.ndarray:
    """Per-utterance CMVN of one clip's (T, n_mfcc) MFCCs (docs/artifact.md, section 4, step 8):
    minus each coefficient's mean over frames; `meanvar` also divides by its population
    standard deviation, floored at 1e-5. float64 inside, float32 out."""
    if kind == "none":
        return m
    x = m.astype(np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    if kind == "meanvar":
        x = x / np.maximum(np.sqrt(np.mean(x * x, axis=0, keepdims=True)), 1e-5)
    return x.astype(np.float32)


def mfcc(x: np.ndarray, feature_params: Mapping[str, Any] | Any) -> np.ndarray:
    """(frames, n_mfcc) float32 MFCCs of one raw clip (samples in [-1, 1]), before normalization.

    Trims and pads the clip (`prepare`), then computes torchaudio's MFCC with the project's
    melkwargs in float64: centered reflect-padded STFT with a periodic Hann window, power
    spectrum, HTK mel filters, 10*log10(max(p, 1e-10)) clamped at (clip max - top_db),
    orthonormal DCT-II. Equals fsdd.features.clip_features to float32 rounding.
    """
    p = _params(feature_params)
    x = prepare(x, p).astype(np.float64)
    pad = p.n_fft // 2
    padded = np.pad(x, pad, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, p.n_fft)[:: p.hop_length]
    power = np.abs(np.fft.rfft(frames * _window(p), axis=1)) ** 2  # (frames, n_freqs)
    mel = power @ mel_filterbank(p)  # (frames, n_mels)
    db = 10.0 * np.log10(np.maximum(mel, AMIN))
    if p.top_db is not None:
        db = np.maximum(db, db.max() - p.top_db)
    return (db @ dct_matrix(p.n_mfcc, p.n_mels)).astype(np.float32)


# --------------------------------------------------------------------------- network


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow warnings


def lstm_logits(x: np.ndarray, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """Logits (N_CLASSES,) of one normalized clip x (T, input_size): one LSTM layer (gates
    i, f, g, o; zero initial state) over all T steps, then the Linear layer on the last h."""
    w_ih = np.asarray(weights["lstm.weight_ih"], dtype=np.float64)
    w_hh = np.asarray(weights["lstm.weight_hh"], dtype=np.float64)
    b = np.asarray(weights["lstm.bias"], dtype=np.float64)
    h_size = w_hh.shape[1]
    xw = np.asarray(x, dtype=np.float64) @ w_ih.T + b  # input projection of every step at once
    w_hh_t = w_hh.T
    h = np.zeros(h_size)
    c = np.zeros(h_size)
    for t in range(xw.shape[0]):
        z = xw[t] + h @ w_hh_t
        i, f, o = _sigmoid(z[:h_size]), _sigmoid(z[h_size : 2 * h_size]), _sigmoid(z[3 * h_size :])
        g = np.tanh(z[2 * h_size : 3 * h_size])
        c = f * c + i * g
        h = o * np.tanh(c)
    return h @ np.asarray(weights["fc.weight"], dtype=np.float64).T + np.asarray(weights["fc.bias"], np.float64)


def predict(meta: Mapping[str, str], weights: Mapping[str, np.ndarray], wav_paths: Sequence[str | Path]) -> np.ndarray:
    """Predicted class index (int64) of each wav, one clip at a time, from dense weights
    (`search.artifact.dense_weights`) and the artifact's feature parameters."""
    params = _params(json.loads(meta["features"]))
    mean = np.asarray(weights["norm.mean"], dtype=np.float32)
    std = np.asarray(weights["norm.std"], dtype=np.float32)
    out = np.empty(len(wav_paths), dtype=np.int64)
    for k, path in enumerate(wav_paths):
        feats = (cmvn(mfcc(read_wav(path, params.sample_rate), params), params.cmvn) - mean) / std
        out[k] = int(np.argmax(lstm_logits(feats, weights)))
    return out


# --------------------------------------------------------------------------- checks


def check_artifact(meta: Mapping[str, str], tensors: Mapping[str, np.ndarray], path: str | Path) -> None:
    """The artifact as docs/artifact.md requires it (search.artifact.validate, which search.deploy
    also calls): metadata in its allowed sets and consistent with the stored config, tensors exactly
    those of the config's layout, positions, scales and values sound; ArtifactError otherwise."""
    validate(dict(meta), dict(tensors), path)


def read_predictions(path: Path) -> dict[str, int]:
    """The torch model's predictions, {wav file name: class 0-9}; VerifyError with one line if the
    file cannot be read or is anything else (truncated, a list, a class that is not an integer 0-9)."""
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise VerifyError(f"cannot read predictions {path}: {e.strerror}") from None
    except (ValueError, RecursionError):  # not JSON (truncated, nested too deeply, ...), or not UTF-8
        raw = None
    if not isinstance(raw, dict):
        raise VerifyError(f"{path}: not a JSON object mapping wav file names to classes")
    bad = next((k for k, v in raw.items() if type(v) is not int or not 0 <= v < N_CLASSES), None)
    if bad is not None:
        raise VerifyError(f"{path}: the class of {bad!r:.60} is {raw[bad]!r:.20}, not an integer 0-{N_CLASSES - 1}")
    return raw


def verify(
    artifact_path: str | Path,
    data_dir: str | Path | None = None,
    split: str | None = None,
    predictions: str | Path | None = None,
) -> dict[str, Any]:
    """Recompute the test accuracy of an artifact from scratch; the result record."""
    artifact_path = Path(artifact_path)
    try:
        meta, tensors = read(artifact_path)
    except (AttributeError, TypeError):  # JSON header that is not an object
        raise ArtifactError(f"{artifact_path}: not a safetensors file (header is not a JSON object)") from None
    check_artifact(meta, tensors, artifact_path)
    try:
        weights = dense_weights(meta, tensors)
    except (KeyError, ValueError, IndexError) as e:
        raise ArtifactError(f"{artifact_path}: tensors do not decode ({e})") from None
    size = payload_bytes(artifact_path)

    data_dir = resolve_data_dir(data_dir)
    files = list_wavs(data_dir)
    names = [f.name for f in files]
    seed = int(meta["seed"])  # a decimal integer (check_artifact)
    test_speaker = meta.get("test_speaker") or None  # format version 1: none
    sp = make_split(names, split or meta["split"], seed, test_speaker=test_speaker)
    if split is None and sp.hash != meta["split_hash"]:
        raise DataError(
            f"split {meta['split']!r} (seed {seed}) of {data_dir} has hash {sp.hash}, the artifact's is "
            f"{meta['split_hash']}: not the data it was trained on (pass --split to evaluate anyway)"
        )
    # An `all` split (a speaker-protocol refit) has no test set: its training clips are
    # checked instead, for agreement with torch; their accuracy is not a test figure.
    scored = sp.test if sp.test else sp.train
    test_files = [files[i] for i in scored]
    labels = np.array([parse_name(f.name)[0] for f in test_files])
    pred = predict(meta, weights, test_files)

    agree, n_compared = None, 0
    # Default: NAME.predictions.json beside NAME.safetensors (exported fronts), else predictions.json (runs).
    beside = artifact_path.with_suffix(".predictions.json")
    default = beside if beside.is_file() else artifact_path.parent / "predictions.json"
    pred_path = Path(predictions) if predictions is not None else default
    if predictions is not None or pred_path.is_file():
        torch_pred = read_predictions(pred_path)
        pairs = [(p, torch_pred[f.name]) for p, f in zip(pred, test_files, strict=True) if f.name in torch_pred]
        n_compared = len(pairs)
        if n_compared:
            agree = sum(int(a == b) for a, b in pairs) / n_compared
        if n_compared < len(test_files):
            print(
                f"warning: {pred_path} lacks {len(test_files) - n_compared} of {len(test_files)} test clips",
                file=sys.stderr,
            )
    acc = float(np.mean(pred == labels))
    return {
        "test_acc": acc if sp.test else None,
        "train_acc": None if sp.test else acc,
        "size_bytes": size,
        "n_test": len(test_files),
        "agree": agree,
        "n_compared": n_compared,
        "split": sp.kind,
        "split_hash": sp.hash,
        "quant": meta["quant_mode"],
        "format_version": meta["format_version"],
        "estimate": json.loads(meta["estimate"]) if meta.get("estimate") else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.verify", description=__doc__.splitlines()[0])
    p.add_argument("artifact", help="model.safetensors written by search.train")
    p.add_argument("--data-dir", help="FSDD recordings folder (default: $FSDD_DIR, else the download cache)")
    p.add_argument("--split", help="evaluate on this split instead of the artifact's (skips the split-hash check)")
    p.add_argument("--predictions", help="torch predictions, JSON {wav name: class} (default: predictions.json beside ARTIFACT)")
    args = p.parse_args(argv)
    try:
        result = verify(args.artifact, args.data_dir, args.split, args.predictions)
    except (ArtifactError, DataError, VerifyError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

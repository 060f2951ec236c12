"""Reference inference from the artifact alone: `python -m search.verify ARTIFACT`.

Reads only the artifact (search.artifact.read + dense_weights) and the wav files, and
computes features (MFCC) and the LSTM + Linear forward pass in numpy, one clip at a time,
as docs/artifact.md specifies them. Neither torch nor torchaudio is imported. Prints one JSON
line last:

    {"test_acc": ..., "size_bytes": ..., "n_test": ..., "agree": ..., ...}

`agree` is the fraction of test clips on which these predictions equal the torch model's,
read from `--predictions FILE`, else `NAME.predictions.json` or `predictions.json` beside the artifact
NAME.safetensors (null if none).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fsdd.audio import read_wav, trim_silence
from fsdd.corpora import as_corpora, default_name, list_clips, parse_data_dir
from fsdd.download import resolve_data_dir
from fsdd.errors import ArgumentParser, DataError, path_arg, run_cli
from fsdd.schema import Corpus, FeatureConfig, load
from fsdd.splits import Split, clip_label, clip_speaker, make_split
from search.artifact import dense_weights, payload_bytes, read, validate

N_CLASSES = 10
AMIN = 1e-10  # torchaudio AmplitudeToDB("power") clamps the power here before log10


# --------------------------------------------------------------------------- features


def feature_config(features: Mapping[str, Any] | FeatureConfig) -> FeatureConfig:
    """The artifact's `features` (a parsed JSON object, checked by search.artifact.validate) as the
    one feature-parameter type; format version 1 has no `cmvn` (none)."""
    return features if isinstance(features, FeatureConfig) else load(FeatureConfig, dict(features), "features")


def hz_to_mel(f: np.ndarray | float) -> np.ndarray | float:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def _window(p: FeatureConfig) -> np.ndarray:
    """Periodic Hann window of win_length, zero-padded on both sides to n_fft (as torch.stft)."""
    n = np.arange(p.win, dtype=np.float64)
    w = 0.5 - 0.5 * np.cos(2.0 * math.pi * n / p.win)
    left = (p.n_fft - p.win) // 2
    return np.pad(w, (left, p.n_fft - p.win - left))


@lru_cache(maxsize=8)
def mel_filterbank(p: FeatureConfig) -> np.ndarray:
    """(n_fft//2+1, n_mels) triangular HTK-mel filters without area normalization
    (torchaudio.functional.melscale_fbanks with norm=None, mel_scale="htk")."""
    n_freqs = p.n_fft // 2 + 1
    all_freqs = np.linspace(0.0, p.sample_rate // 2, n_freqs)
    m_pts = np.linspace(hz_to_mel(p.f_min), hz_to_mel(p.fmax), p.n_mels + 2)
    f_pts = mel_to_hz(m_pts)
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


def prepare(x: np.ndarray, p: FeatureConfig) -> np.ndarray:
    """Trim leading/trailing silence, then zero-pad at the end to at least n_fft samples."""
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


def mfcc(x: np.ndarray, p: FeatureConfig) -> np.ndarray:
    """(frames, n_mfcc) float32 MFCCs of one raw clip (samples in [-1, 1]), before normalization.

    Trims and pads the clip (`prepare`), then computes torchaudio's MFCC with the project's
    melkwargs in float64: centered reflect-padded STFT with a periodic Hann window, power
    spectrum, HTK mel filters, 10*log10(max(p, 1e-10)) clamped at (clip max - top_db),
    orthonormal DCT-II. Equals fsdd.features.clip_features to float32 rounding.
    """
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
    params = feature_config(json.loads(meta["features"]))
    mean = np.asarray(weights["norm.mean"], dtype=np.float32)
    std = np.asarray(weights["norm.std"], dtype=np.float32)
    out = np.empty(len(wav_paths), dtype=np.int64)
    for k, path in enumerate(wav_paths):
        feats = (cmvn(mfcc(read_wav(path, params.sample_rate), params), params.cmvn) - mean) / std
        out[k] = int(np.argmax(lstm_logits(feats, weights)))
    return out


# --------------------------------------------------------------------------- checks


def read_predictions(path: Path) -> dict[str, int]:
    """The torch model's predictions, {clip key: class 0-9}; DataError with one line if the file
    cannot be read or is anything else (truncated, a list, a class that is not an integer 0-9)."""
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise DataError(f"cannot read predictions {path}: {e.strerror}") from None
    except (ValueError, RecursionError):  # not JSON (truncated, nested too deeply, ...), or not UTF-8
        raw = None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: not a JSON object mapping wav file names to classes")
    bad = next((k for k, v in raw.items() if type(v) is not int or not 0 <= v < N_CLASSES), None)
    if bad is not None:
        raise DataError(f"{path}: the class of {bad!r:.60} is {raw[bad]!r:.20}, not an integer 0-{N_CLASSES - 1}")
    return raw


@dataclasses.dataclass(frozen=True)
class ScoredClips:
    """The clips an artifact's figures cover, rebuilt from its metadata and the data alone."""

    keys: list[str]  # clip keys (file names, or corpus/file with several corpora)
    files: list[Path]
    split: Split
    part: str  # test, or train for an `all` split (a refit: agreement only, not a test figure)


def artifact_corpora(
    meta: Mapping[str, str], data: Sequence[Corpus] | str | Path | None, own: bool = True, download: bool = True
) -> tuple[Corpus, ...]:
    """The corpora to score an artifact on: `data` (folders or NAME=PATH corpora), else $FSDD_DIR or
    the download cache. For its own split (`own`), an artifact of several corpora (format version 3)
    needs each of them, by name; DataError naming the missing ones."""
    listed = [c["name"] for c in json.loads(meta["corpora"])] if meta.get("corpora") else []
    if data is None or isinstance(data, str | Path):
        folder = resolve_data_dir(data, download_if_missing=download)
        return (Corpus(listed[0] if len(listed) == 1 else default_name(folder), str(folder)),)
    given = as_corpora(data)
    if own and len(listed) > 1:
        missing = [n for n in listed if n not in {c.name for c in given}]
        if missing:
            raise DataError(f"the artifact was trained on corpora {', '.join(listed)}: pass --data-dir NAME=PATH for {', '.join(missing)}")
        return tuple(next(c for c in given if c.name == n) for n in listed)
    return given


def scored_clips(
    meta: Mapping[str, str], data: Sequence[Corpus] | str | Path | None = None, split: str | None = None, download: bool = True
) -> ScoredClips:
    """The clips an artifact's predictions cover: its split's test part (the training part for
    `all`), rebuilt from the metadata (docs/artifact.md section 6). DataError if the data does not
    give the artifact's split hash (another folder, or a subset), unless `split` overrides it."""
    clips = list_clips(artifact_corpora(meta, data, own=split is None, download=download))
    folds = int(json.loads(meta["config"]).get("train", {}).get("folds", 6))
    test_speaker = (meta.get("test_speaker") or None) if split is None else None
    sp = make_split(list(clips.keys), split or meta["split"], int(meta["seed"]), test_speaker=test_speaker, folds=folds)
    if split is None and sp.hash != meta["split_hash"]:
        where = ", ".join(c.path for c in clips.corpora)
        raise DataError(
            f"split {meta['split']!r} (seed {meta['seed']}) of {where} has hash {sp.hash}, the artifact's is "
            f"{meta['split_hash']}: not the data it was trained on (pass --split to evaluate anyway)"
        )
    part = "test" if sp.test else "train"
    idx = sp.test if sp.test else sp.train
    return ScoredClips([clips.keys[i] for i in idx], [clips.files[i] for i in idx], sp, part)


def verify(
    artifact_path: str | Path,
    data: Sequence[Corpus] | str | Path | None = None,
    split: str | None = None,
    predictions: str | Path | None = None,
) -> dict[str, Any]:
    """Recompute an artifact's accuracy from scratch, from the artifact and the wavs alone; the
    result record. ArtifactError or DataError (one line) if either cannot be used."""
    artifact_path = Path(artifact_path)
    meta, tensors = read(artifact_path)
    validate(meta, tensors, artifact_path)
    weights = dense_weights(meta, tensors)
    clips = scored_clips(meta, data, split)
    labels = np.array([clip_label(k) for k in clips.keys])
    pred = predict(meta, weights, clips.files)

    agree, n_compared = None, 0
    # Default: NAME.predictions.json beside NAME.safetensors (exported fronts), else predictions.json (runs).
    beside = artifact_path.with_suffix(".predictions.json")
    default = beside if beside.is_file() else artifact_path.parent / "predictions.json"
    pred_path = Path(predictions) if predictions is not None else default
    if split is None and (predictions is not None or pred_path.is_file()):
        torch_pred = read_predictions(pred_path)
        pairs = [(p, torch_pred[k]) for p, k in zip(pred, clips.keys, strict=True) if k in torch_pred]
        n_compared = len(pairs)
        if n_compared:
            agree = sum(int(a == b) for a, b in pairs) / n_compared
        if n_compared < len(clips.keys):
            print(f"warning: {pred_path} lacks {len(clips.keys) - n_compared} of {len(clips.keys)} scored clips", file=sys.stderr)
    acc = float(np.mean(pred == labels))
    owners = np.array([clip_speaker(k) for k in clips.keys])
    per_speaker = {s: float(np.mean(pred[owners == s] == labels[owners == s])) for s in sorted(set(owners))}
    return {
        "test_acc": acc if clips.part == "test" else None,
        "train_acc": None if clips.part == "test" else acc,
        "size_bytes": payload_bytes(artifact_path),
        "n_test": len(clips.keys),
        "agree": agree,
        "n_compared": n_compared,
        "split": clips.split.kind,
        "split_hash": clips.split.hash,
        "quant": meta["quant_mode"],
        "format_version": meta["format_version"],
        "estimate": json.loads(meta["estimate"]) if meta.get("estimate") else None,
        "speakers": per_speaker,  # each speaker's accuracy on the scored clips
    }


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    p = ArgumentParser(prog="python -m search.verify", description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=path_arg, help="model.safetensors written by search.train")
    p.add_argument(
        "--data-dir",
        action="append",
        type=parse_data_dir,
        metavar="[NAME=]PATH",
        help="recordings folder (default: $FSDD_DIR, else the download cache); once per corpus of a several-corpora artifact",
    )
    p.add_argument("--split", help="evaluate on this split instead of the artifact's (eval: every clip; skips the split-hash check)")
    p.add_argument(
        "--predictions",
        type=path_arg,
        help="torch predictions, JSON (default: NAME.predictions.json, else predictions.json, beside ARTIFACT)",
    )
    args = p.parse_args(argv)
    data = args.data_dir
    print(json.dumps(verify(args.artifact, data, args.split, args.predictions)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The clips an artifact's predictions cover (its split's test part; the training part for `all`),
found as search.verify finds them, and the numpy reference's logits on one clip."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fsdd.audio import list_wavs, read_wav
from fsdd.download import resolve_data_dir
from fsdd.errors import DataError
from fsdd.splits import make_split
from search import verify


def split_clips(meta: Mapping[str, str], data_dir: str | Path | None = None, download: bool = False) -> list[Path]:
    """Wav files of the artifact's test part (docs/artifact.md section 6); DataError if the data
    folder does not give the artifact's split (another folder, or a subset)."""
    folder = resolve_data_dir(data_dir, download_if_missing=download)
    files = list_wavs(folder)
    sp = make_split([f.name for f in files], meta["split"], int(meta["seed"]), test_speaker=meta.get("test_speaker") or None)
    if sp.hash != meta["split_hash"]:
        raise DataError(
            f"split {meta['split']!r} (seed {meta['seed']}) of {folder} has hash {sp.hash}, the artifact's is "
            f"{meta['split_hash']}: not the data it was trained on"
        )
    return [files[i] for i in (sp.test if sp.test else sp.train)]


def reference_logits(meta: Mapping[str, str], weights: Mapping[str, np.ndarray], wav: Path) -> np.ndarray:
    """(10,) float64 logits of search.verify's numpy reference on one wav."""
    params = verify._params(json.loads(meta["features"]))
    x = verify.cmvn(verify.mfcc(read_wav(wav, params.sample_rate), params), params.cmvn)
    return verify.lstm_logits((x - weights["norm.mean"]) / weights["norm.std"], weights)


def pcm16(wav: Path) -> np.ndarray:
    """The wav's samples as int16, exactly (FSDD wavs are 16-bit PCM: read_wav gives s / 32768)."""
    x = read_wav(wav) * 32768.0
    if not np.all(x == np.round(x)) or x.min() < -32768 or x.max() > 32767:
        raise DataError(f"{wav}: not 16-bit PCM")
    return x.astype(np.int16)

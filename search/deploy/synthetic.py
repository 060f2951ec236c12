"""Artifacts from random weights (no data, no training): for the tests and for calibrating the
flash predictor. Weights are valid for every mode (codes in range, pruning by magnitude)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search import artifact
from search.schema import Config
from search.size import weight_shapes


def random_artifact(
    cfg: Config,
    path: Path,
    seed: int = 0,
    norm: tuple[np.ndarray, np.ndarray] | None = None,
    split_hash: str = "000000000000",
) -> Path:
    """Write an artifact of `cfg` with random weights to `path`. `norm` (mean, std) of the
    features; default: zero mean, unit std."""
    rng = np.random.default_rng(seed)
    h, i, q = cfg.model.hidden_size, cfg.features.n_mfcc, cfg.quant
    floats, codes = {}, {}
    for name, (rows, cols) in weight_shapes(cfg).items():
        w = rng.normal(0.0, 1.0 / np.sqrt(cols), (rows, cols)).astype(np.float32)
        if q.mode == "ptq_int8":
            scale = np.array([np.abs(w).max() / 127], dtype=np.float32)
            codes[name] = (np.clip(np.round(w / scale), -128, 127).astype(np.int8), scale)
        elif q.mode == "qat":
            top = 2 ** (q.bits - 1) - 1
            n_scales = rows if q.per_channel else 1
            amax = np.abs(w).reshape(n_scales, -1).max(axis=1)
            scale = amax / top
            if q.scale == "po2":
                scale = 2.0 ** np.ceil(np.log2(scale))
            scale = scale.astype(np.float32)
            per_row = scale.reshape(-1, 1) if q.per_channel else scale.reshape(1, 1)
            c = np.clip(np.round(w / per_row), -top, top).astype(np.int32)
            w = (c * per_row).astype(np.float32)  # the fake-quantized weight, as QAT would hold it
            codes[name] = (c, scale)
        floats[name] = w
    biases = {"lstm.bias": rng.normal(0.0, 0.3, 4 * h).astype(np.float32), "fc.bias": rng.normal(0.0, 0.3, 10).astype(np.float32)}
    if norm is None:
        norm = (np.zeros(i, np.float32), np.ones(i, np.float32))
    tensors = artifact.build_payload(cfg, floats, biases, norm, codes)
    artifact.write(path, tensors, artifact.metadata(cfg, split_hash, cfg.train.seed, [{"name": "fsdd", "clips": 3000}]))
    return path

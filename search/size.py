"""The one place that knows how many bytes a configuration costs.

`layout(cfg)` lists every tensor of the exported artifact (name, dtype, shape) from the
configuration alone, before any training; `size_bytes(cfg)` is their total. The exporter
writes exactly these tensors (search.artifact checks it), so the number is the file's payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod

import numpy as np

from search.schema import N_CLASSES, Config

KIB = 1024


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str  # numpy dtype name, little-endian
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * np.dtype(self.dtype).itemsize


def kept_after(n: int, schedule: tuple[tuple[int, float], ...]) -> int:
    """Weights left after the schedule: each step prunes round(rate * remaining), exactly as
    torch.nn.utils.prune does for a float amount on an already pruned tensor."""
    for _, rate in schedule:
        n -= round(rate * n)
    return n


def index_dtype(n: int) -> str:
    """Smallest unsigned integer dtype that holds a flat index into n elements."""
    return "uint8" if n <= 1 << 8 else "uint16" if n <= 1 << 16 else "uint32"


def sparse_encoding(n: int, nnz: int) -> Entry | None:
    """Bitmask (1 bit per element) or flat indices of the kept weights, whichever is smaller."""
    if nnz == n:
        return None
    mask_bytes = ceil(n / 8)
    idx = index_dtype(n)
    if mask_bytes <= nnz * np.dtype(idx).itemsize:
        return Entry("mask", "uint8", (mask_bytes,))
    return Entry("index", idx, (nnz,))


def weight_shapes(cfg: Config) -> dict[str, tuple[int, int]]:
    h, i = cfg.model.hidden_size, cfg.features.n_mfcc
    return {"lstm.weight_ih": (4 * h, i), "lstm.weight_hh": (4 * h, h), "fc.weight": (N_CLASSES, h)}


def layout(cfg: Config) -> list[Entry]:
    """Every tensor of the artifact, in file order. See docs/artifact.md for their meaning."""
    q, h, i = cfg.quant, cfg.model.hidden_size, cfg.features.n_mfcc
    entries = [Entry("norm.mean", "float32", (i,)), Entry("norm.std", "float32", (i,))]
    for name, (rows, cols) in weight_shapes(cfg).items():
        n = rows * cols
        nnz = kept_after(n, cfg.prune.schedule)
        dense = nnz == n
        if q.mode == "fp32":
            entries.append(Entry(name if dense else f"{name}.values", "float32", (rows, cols) if dense else (nnz,)))
        elif q.mode == "ptq_int8":
            entries.append(Entry(f"{name}.q", "int8", (rows, cols) if dense else (nnz,)))
            entries.append(Entry(f"{name}.scale", "float32", (1,)))
        else:
            entries.append(Entry(f"{name}.q", "uint8", (ceil(nnz * q.bits / 8),)))
            n_scales = rows if q.per_channel else 1
            entries.append(
                Entry(f"{name}.exp", "int8", (n_scales,)) if q.scale == "po2" else Entry(f"{name}.scale", "float32", (n_scales,))
            )
        enc = sparse_encoding(n, nnz)
        if enc is not None:
            entries.append(Entry(f"{name}.{enc.name}", enc.dtype, enc.shape))
    entries += [Entry("lstm.bias", "float32", (4 * h,)), Entry("fc.bias", "float32", (N_CLASSES,))]
    return entries


def size_bytes(cfg: Config) -> int:
    """Exact payload bytes of the exported artifact of this configuration."""
    return sum(e.nbytes for e in layout(cfg))


def n_params(cfg: Config) -> int:
    """Float parameters of the model as nn.LSTM + nn.Linear count them (two LSTM bias vectors)."""
    h = cfg.model.hidden_size
    return sum(r * c for r, c in weight_shapes(cfg).values()) + 8 * h + N_CLASSES


def nonzero_weights(cfg: Config) -> int:
    return sum(kept_after(r * c, cfg.prune.schedule) for r, c in weight_shapes(cfg).values())


def sparsity(cfg: Config) -> float:
    """Fraction of pruned weights (biases are never pruned) the schedule leads to."""
    total = sum(r * c for r, c in weight_shapes(cfg).values())
    return 1 - nonzero_weights(cfg) / total


def size_bytes_study(cfg: Config) -> float:
    """The manual study's convention: non-zero parameters x bytes per value, no index cost."""
    per_value = {"fp32": 4.0, "ptq_int8": 1.0, "qat": cfg.quant.bits / 8}[cfg.quant.mode]
    return (nonzero_weights(cfg) + n_params(cfg) - sum(r * c for r, c in weight_shapes(cfg).values())) * per_value

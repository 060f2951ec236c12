"""The deployable artifact: one .safetensors file holding exactly `size_bytes(cfg)` payload bytes.

The format is specified in docs/artifact.md; this module writes it and decodes it (numpy only).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from fsdd.files import atomic_write
from search.config import Config
from search.size import N_CLASSES, kept_after, layout, weight_shapes

FORMAT = "fsdd-lstm"
FORMAT_VERSION = "2"  # written; 2 adds per-utterance CMVN (features.cmvn) and the speaker protocol's splits
READABLE_VERSIONS = ("1", "2")  # version 1 is version 2 with cmvn "none"


class ArtifactError(ValueError):
    """An artifact that cannot be read: not safetensors, truncated, or another format/version."""


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Signed integers -> `bits`-bit two's complement, packed LSB-first into bytes
    (element k occupies stream bits k*bits .. k*bits+bits-1; stream bit j is bit j%8 of byte j//8)."""
    u = codes.astype(np.int64).reshape(-1) & ((1 << bits) - 1)
    stream = ((u[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    stream = np.pad(stream, (0, -len(stream) % 8))
    return np.packbits(stream, bitorder="little")


def unpack_bits(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of pack_bits: `count` signed integers (int32)."""
    stream = np.unpackbits(data, bitorder="little")[: count * bits].reshape(count, bits).astype(np.int64)
    u = (stream << np.arange(bits)).sum(1)
    return np.where(u >= 1 << (bits - 1), u - (1 << bits), u).astype(np.int32)


def kept_positions(w: np.ndarray, nnz: int) -> np.ndarray:
    """Sorted flat positions of the `nnz` largest-magnitude weights: the pruning mask's ones
    (pruned weights are exact zeros, and magnitude pruning keeps the largest)."""
    flat = np.abs(w.reshape(-1))
    return np.sort(np.argsort(-flat, kind="stable")[:nnz])


def _encode_positions(pos: np.ndarray, n: int, kind: str, dtype: str) -> np.ndarray:
    if kind == "mask":
        bits = np.zeros(n, dtype=np.uint8)
        bits[pos] = 1
        return np.packbits(bits, bitorder="little")
    return pos.astype(dtype)


def build_payload(
    cfg: Config,
    float_weights: dict[str, np.ndarray],
    biases: dict[str, np.ndarray],
    norm: tuple[np.ndarray, np.ndarray],
    codes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """Tensors of the artifact, in `layout(cfg)` order.

    float_weights: the trained (pruned) float weights by layout name ("lstm.weight_ih", ...);
    codes: for ptq_int8/qat, the integer codes (same shape) and scales of those weights.
    """
    spec = layout(cfg)
    by_name = {e.name: e for e in spec}
    out: dict[str, np.ndarray] = {"norm.mean": norm[0].astype(np.float32), "norm.std": norm[1].astype(np.float32)}
    for name in weight_shapes(cfg):
        w = float_weights[name]
        enc = by_name.get(f"{name}.mask") or by_name.get(f"{name}.index")
        values_entry = by_name.get(name) or by_name.get(f"{name}.values") or by_name[f"{name}.q"]
        if enc is None:
            pos = np.arange(w.size)
        else:
            pos = kept_positions(w, kept_after(w.size, cfg.prune.schedule))
            out[enc.name] = _encode_positions(pos, w.size, enc.name.rsplit(".", 1)[1], enc.dtype)
        if cfg.quant.mode == "fp32":
            out[values_entry.name] = w.astype(np.float32) if enc is None else w.reshape(-1)[pos].astype(np.float32)
            continue
        c, scale = codes[name]
        kept = c.reshape(-1)[pos]
        if cfg.quant.mode == "ptq_int8":
            out[f"{name}.q"] = kept.reshape(w.shape).astype(np.int8) if enc is None else kept.astype(np.int8)
            out[f"{name}.scale"] = scale.astype(np.float32).reshape(1)
        else:
            out[f"{name}.q"] = pack_bits(kept, cfg.quant.bits)
            if cfg.quant.scale == "po2":
                exp = np.log2(scale.astype(np.float64))
                if not np.all(exp == np.round(exp)):
                    raise RuntimeError(f"{name}: po2 scale is not a power of two")
                out[f"{name}.exp"] = exp.astype(np.int8)
            else:
                out[f"{name}.scale"] = scale.astype(np.float32)
    out["lstm.bias"] = biases["lstm.bias"].astype(np.float32)
    out["fc.bias"] = biases["fc.bias"].astype(np.float32)
    got = [(k, str(v.dtype), tuple(v.shape)) for k, v in out.items()]
    want = [(e.name, e.dtype, e.shape) for e in spec]
    if sorted(got) != sorted(want):
        raise RuntimeError(f"artifact tensors differ from size.layout: {sorted(set(got) ^ set(want))}")
    return {e.name: out[e.name] for e in spec}


def metadata(cfg: Config, split_hash: str, seed: int, estimate: dict[str, Any] | None = None) -> dict[str, str]:
    """The artifact's metadata (docs/artifact.md, section 2). `estimate`: the new-speaker
    accuracy that the search's leave-one-speaker-out folds measured for this configuration."""
    q = cfg.quant
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hidden_size": str(cfg.model.hidden_size),
        "input_size": str(cfg.features.n_mfcc),
        "classes": json.dumps([str(d) for d in range(N_CLASSES)]),
        "gate_order": "ifgo",
        "quant_mode": q.mode,
        "bits": str({"fp32": 32, "ptq_int8": 8, "qat": q.bits}[q.mode]),
        "scale": {"fp32": "none", "ptq_int8": "float", "qat": q.scale}[q.mode],
        "per_channel": str(q.mode == "qat" and q.per_channel).lower(),
        "pruned": str(bool(cfg.prune.schedule)).lower(),
        "features": json.dumps(cfg.features.to_dict(), sort_keys=True),
        "split": cfg.train.split,
        "split_hash": split_hash,
        "seed": str(seed),
        "test_speaker": cfg.train.test_speaker or "",
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
    }
    if estimate is not None:
        meta["estimate"] = json.dumps(estimate, sort_keys=True)
    return meta


def write(path: str | Path, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> int:
    """Write atomically; returns the payload bytes (file size - 8 - header length)."""
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return payload_bytes(path)


def payload_bytes(path: str | Path) -> int:
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise ArtifactError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", head)
    return Path(path).stat().st_size - 8 - n


def read(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Metadata and tensors of an artifact; ArtifactError with one clear line if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ArtifactError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise ArtifactError(f"{path}: not a safetensors file, or truncated (header length {n}, file {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ArtifactError(f"{path}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__", {}), dict):
        raise ArtifactError(f"{path}: not a safetensors file (header is not a JSON object)")
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not an {FORMAT} artifact (format={meta.get('format')!r})")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise ArtifactError(
            f"{path}: format version {meta.get('format_version')!r} is not supported (this reader: {', '.join(READABLE_VERSIONS)})"
        )
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path}: corrupt or truncated safetensors file ({str(e).splitlines()[0]})") from None
    return meta, tensors


def dense_weights(meta: dict[str, str], t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Dequantized dense float32 weights and biases, by layout name (see docs/artifact.md)."""
    h, i = int(meta["hidden_size"]), int(meta["input_size"])
    mode, bits = meta["quant_mode"], int(meta["bits"])
    shapes = {"lstm.weight_ih": (4 * h, i), "lstm.weight_hh": (4 * h, h), "fc.weight": (N_CLASSES, h)}
    out: dict[str, np.ndarray] = {}
    for name, (rows, cols) in shapes.items():
        n = rows * cols
        if f"{name}.mask" in t:
            pos = np.flatnonzero(np.unpackbits(t[f"{name}.mask"], bitorder="little")[:n])
        elif f"{name}.index" in t:
            pos = t[f"{name}.index"].astype(np.int64)
        else:
            pos = np.arange(n)
        if mode == "fp32":
            vals = t[name].reshape(-1) if name in t else t[f"{name}.values"]
        elif mode == "ptq_int8":
            vals = t[f"{name}.q"].reshape(-1).astype(np.float32) * t[f"{name}.scale"][0]
        else:
            codes = unpack_bits(t[f"{name}.q"], bits, len(pos)).astype(np.float32)
            scale = (np.exp2(t[f"{name}.exp"].astype(np.float32)) if f"{name}.exp" in t else t[f"{name}.scale"]).astype(np.float32)
            vals = codes * (scale[pos // cols] if len(scale) > 1 else scale[0])
        w = np.zeros(n, dtype=np.float32)
        w[pos] = vals
        out[name] = w.reshape(rows, cols)
    out["lstm.bias"], out["fc.bias"] = t["lstm.bias"], t["fc.bias"]
    out["norm.mean"], out["norm.std"] = t["norm.mean"], t["norm.std"]
    return out


def from_model(cfg: Config, net: Any, ptq: Any = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """Float weights, biases and (for ptq_int8/qat) integer codes of a trained network."""
    from search.quant import int_weights

    lstm, fc = net.lstm, net.fc
    w = {"lstm.weight_ih": lstm.weight_ih_l0, "lstm.weight_hh": lstm.weight_hh_l0, "fc.weight": fc.weight}
    floats = {k: v.detach().float().numpy() for k, v in w.items()}
    biases = {
        "lstm.bias": (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy(),
        "fc.bias": fc.bias.detach().numpy(),
    }
    codes = {}
    if cfg.quant.mode == "qat":
        proxies = {"lstm.weight_ih": lstm.wq_ih, "lstm.weight_hh": lstm.wq_hh, "fc.weight": fc.wq}
        for k, v in w.items():
            c, s = int_weights(proxies[k], v)
            codes[k] = (c.numpy(), s.numpy())
    elif cfg.quant.mode == "ptq_int8":
        wb = ptq.lstm._weight_bias()["weight"]
        qw = {"lstm.weight_ih": wb["weight_ih_l0"], "lstm.weight_hh": wb["weight_hh_l0"], "fc.weight": ptq.fc.weight()}
        for k, v in qw.items():
            if v.q_zero_point() != 0:
                raise RuntimeError(f"{k}: dynamic int8 weight is not symmetric")
            codes[k] = (v.int_repr().numpy(), np.array([v.q_scale()], dtype=np.float32))
    return floats, biases, codes

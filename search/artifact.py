"""The deployable artifact: one .safetensors file holding exactly `size_bytes(cfg)` payload bytes.

The format is specified in docs/artifact.md; this module writes it and decodes it (numpy only,
torch-free: search.verify and search.deploy read artifacts without the training stack).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from fsdd.errors import ArtifactError, ConfigError
from fsdd.files import atomic_write
from fsdd.schema import FeatureConfig, SplitName, corpus_name_problem, load, speaker_problem
from search.schema import N_CLASSES, SEED_MAX, Config, from_dict
from search.size import kept_after, layout, weight_shapes

FORMAT = "fsdd-lstm"
FORMAT_VERSION = "3"  # written; 3 adds the corpora (and so corpus-qualified speakers, fold:K/N splits, train-only voices)
READABLE_VERSIONS = ("1", "2", "3")  # 2 added per-utterance CMVN and the speaker protocol's splits; 1 is 2 with cmvn "none"
REQUIRED_META = (
    "hidden_size",
    "input_size",
    "classes",
    "gate_order",
    "quant_mode",
    "bits",
    "scale",
    "per_channel",
    "pruned",
    "features",
    "split",
    "split_hash",
    "seed",
    "config",
)  # and format, format_version (read checks them); test_speaker (version 2) and estimate are optional
STD_MIN = np.float32(1e-5)  # norm.std is clamped to >= 1e-5 (in float32) when it is computed
FLOAT32_MAX = float(np.finfo(np.float32).max)
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_SPLIT_HASH = re.compile(r"[0-9a-f]{12}")


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


def metadata(
    cfg: Config,
    split_hash: str,
    seed: int,
    corpora: list[dict[str, Any]],
    estimate: dict[str, Any] | None = None,
    voices: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The artifact's metadata (docs/artifact.md, section 2). `corpora`: the real corpora of the
    split, in order, as {"name", "clips"}; `voices`: the training-only (synthetic) voices it was
    trained with, if any, as {"name", "clips", "settings"}; `estimate`: the new-speaker
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
    meta["corpora"] = json.dumps(corpora, sort_keys=True)
    if voices is not None:
        meta["voices"] = json.dumps(voices, sort_keys=True)
    if estimate is not None:
        meta["estimate"] = json.dumps(estimate, sort_keys=True)
    return meta


def write(path: str | Path, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> int:
    """Write atomically, in canonical form (`canonical`); returns the payload bytes (file size - 8 -
    header length). The same tensors and metadata always give the same bytes."""

    def save(tmp: str) -> None:
        save_file(tensors, tmp, metadata=meta)
        Path(tmp).write_bytes(canonical(Path(tmp).read_bytes()))

    atomic_write(path, save)
    return payload_bytes(path)


def canonical(blob: bytes) -> bytes:
    """A safetensors file with its header rewritten in one fixed layout (docs/artifact.md section 1):
    `__metadata__` first with its keys sorted, then the tensors in the writer's order (their data
    offsets), as compact JSON (no spaces, UTF-8), padded with spaces to a multiple of 8 bytes; the
    data bytes unchanged. Written by hand because safetensors serializes the metadata from a hash
    map, whose order changes from one process to the next: users pin deployed models by SHA-256."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta = header.pop("__metadata__", None) or {}
    tensors = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"])
    ordered = {"__metadata__": dict(sorted(meta.items())), **dict(tensors)} if meta else dict(tensors)
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


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
            header = strict_json(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ArtifactError(f"{path}: not a safetensors file (unreadable header)") from None
        except RecursionError:
            raise ArtifactError(f"{path}: safetensors header nested too deeply") from None
        except ValueError as e:  # a key twice, or NaN/Infinity
            raise ArtifactError(f"{path}: safetensors header: {e}") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__", {}), dict):
        raise ArtifactError(f"{path}: not a safetensors file (header is not a JSON object)")
    meta = header.get("__metadata__") or {}
    odd = next((k for k, v in meta.items() if not isinstance(v, str)), None)
    if odd is not None:
        raise ArtifactError(f"{path}: metadata {_show(odd)} is not a string (safetensors metadata maps strings to strings)")
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


def strict_json(text: str | bytes) -> Any:
    """json.loads that refuses an object holding a key twice (json.loads keeps the last silently,
    so two readers may see two values) and the non-JSON constants NaN and Infinity: ValueError."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"key {_show(k)} appears twice")
            out[k] = v
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)


def _show(value: Any, width: int = 40) -> str:
    """repr of a value for a one-line message: escaped (no newline can get through) and short."""
    r = repr(value)
    return r if len(r) <= width else r[: width - 3] + "..."


def _split_ok(split: str) -> bool:
    try:
        return SplitName.parse(split).kind != "speakers"
    except ValueError:
        return False


def validate(meta: dict[str, str], tensors: dict[str, np.ndarray], path: str | Path) -> Config:
    """Everything docs/artifact.md requires of an artifact that needs no data to check: every
    metadata value in its allowed set or format and consistent with the stored config, the tensors
    exactly those of the config's layout, and their contents (positions, scales, finite values).
    Returns the config; ArtifactError with one line naming the field or tensor otherwise.
    search.verify and search.deploy both call it before decoding anything."""
    cfg = _check_metadata(meta, path)
    _check_tensors(cfg, tensors, path)
    return cfg


def _check_metadata(meta: dict[str, str], path: str | Path) -> Config:
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ArtifactError(f"{path}: metadata lacks {', '.join(missing)}")

    def bad(key: str, expected: str) -> ArtifactError:
        return ArtifactError(f"{path}: metadata {key} is {_show(meta[key])}; expected {expected}")

    parsed: dict[str, Any] = {}
    if meta["format_version"] == "3" and "corpora" not in meta:
        raise ArtifactError(f"{path}: metadata lacks corpora (format version 3)")
    for key in ("classes", "features", "config", "estimate", "corpora", "voices"):
        if key not in meta:
            continue
        try:
            parsed[key] = strict_json(meta[key])
        except (ValueError, RecursionError) as e:
            raise ArtifactError(f"{path}: metadata {key} is not valid JSON ({str(e).splitlines()[0]})") from None
        if key not in ("classes", "corpora") and not isinstance(parsed[key], dict):
            raise ArtifactError(f"{path}: metadata {key} is not a JSON object")
    if "corpora" in parsed:
        _check_corpora(parsed["corpora"], path)
    if parsed["classes"] != [str(d) for d in range(N_CLASSES)]:
        raise bad("classes", '["0", "1", ..., "9"]')
    if meta["gate_order"] != "ifgo":
        raise ArtifactError(f"{path}: metadata gate_order {_show(meta['gate_order'])} is not supported (only ifgo)")
    for key in ("hidden_size", "input_size", "bits", "seed"):
        if not _DECIMAL.fullmatch(meta[key]):
            raise bad(key, "a decimal integer >= 0")
    if int(meta["seed"]) > SEED_MAX:
        raise bad("seed", f"an integer in 0..{SEED_MAX}")
    allowed = {
        "quant_mode": ("fp32", "ptq_int8", "qat"),
        "scale": ("none", "float", "po2"),
        "per_channel": ("true", "false"),
        "pruned": ("true", "false"),
    }
    for key, values in allowed.items():
        if meta[key] not in values:
            raise bad(key, " or ".join(values))
    if not _SPLIT_HASH.fullmatch(meta["split_hash"]):
        raise bad("split_hash", "12 lower-case hex digits")
    if not _split_ok(meta["split"]):
        raise bad("split", "random, official, all, speaker:NAME, loso:NAME or fold:K/N")
    if meta.get("test_speaker") and speaker_problem(meta["test_speaker"]):
        raise bad("test_speaker", "a speaker's name (NAME or CORPUS/NAME, printable, without '_') or empty")
    try:
        cfg = from_dict(parsed["config"])
    except ConfigError as e:
        raise ArtifactError(f"{path}: metadata config: {str(e).splitlines()[0]}") from None
    try:
        features = load(FeatureConfig, parsed["features"], "features")
    except ConfigError as e:
        raise ArtifactError(f"{path}: metadata {e}") from None
    if meta["format_version"] == "1" and features.cmvn != "none":
        raise ArtifactError(f"{path}: format version 1 has no CMVN, but its features say cmvn={features.cmvn!r}")
    if features != cfg.features:
        raise ArtifactError(f"{path}: metadata features contradict its config's features")
    q = cfg.quant
    implied = {
        "hidden_size": str(cfg.model.hidden_size),
        "input_size": str(cfg.features.n_mfcc),
        "quant_mode": q.mode,
        "bits": str({"fp32": 32, "ptq_int8": 8}.get(q.mode, q.bits)),
        "scale": {"fp32": "none", "ptq_int8": "float"}.get(q.mode, q.scale),
        "per_channel": str(q.mode == "qat" and q.per_channel).lower(),
        "pruned": str(bool(cfg.prune.schedule)).lower(),
        "split": cfg.train.split,
        "seed": str(cfg.train.seed),
        "test_speaker": cfg.train.test_speaker or "",
    }
    for key, want in implied.items():
        got = meta.get(key, "")  # test_speaker: absent in version 1
        if got != want:
            raise ArtifactError(f"{path}: metadata {key} is {_show(got)} but its config says {_show(want)}")
    return cfg


def _check_corpora(corpora: Any, path: str | Path) -> None:
    ok = (
        isinstance(corpora, list)
        and corpora
        and all(
            isinstance(c, dict)
            and set(c) == {"name", "clips"}
            and isinstance(c["name"], str)
            and corpus_name_problem(c["name"]) is None
            and type(c["clips"]) is int
            and c["clips"] > 0
            for c in corpora
        )
    )
    if not ok or len({c["name"] for c in corpora}) != len(corpora):
        raise ArtifactError(f"{path}: metadata corpora is not a list of distinct {{name, clips}} (a corpus name and a clip count > 0)")


def _check_tensors(cfg: Config, t: dict[str, np.ndarray], path: str | Path) -> None:
    want = {(e.name, e.dtype, e.shape) for e in layout(cfg)}
    got = {(k, str(v.dtype), tuple(v.shape)) for k, v in t.items()}
    if got != want:
        diff = sorted(f"{n} {d}{list(s)}" for n, d, s in got ^ want)
        raise ArtifactError(f"{path}: tensors differ from the layout of its config: {', '.join(diff[:4])}")
    for name, a in t.items():
        if a.dtype == np.float32 and not np.all(np.isfinite(a)):
            raise ArtifactError(f"{path}: tensor {name} holds a non-finite value (NaN or infinity)")
    std = t["norm.std"]
    if np.any(std < STD_MIN):
        raise ArtifactError(
            f"{path}: tensor norm.std holds {float(std.min()):g}; a standard deviation (clamped to >= {STD_MIN:g}) is expected"
        )
    q = cfg.quant
    for name, (rows, cols) in weight_shapes(cfg).items():
        n = rows * cols
        nnz = kept_after(n, cfg.prune.schedule) if f"{name}.mask" in t or f"{name}.index" in t else n
        if f"{name}.mask" in t:
            bits = np.unpackbits(t[f"{name}.mask"], bitorder="little")
            if bits[n:].any():
                raise ArtifactError(f"{path}: tensor {name}.mask sets padding bits beyond position {n - 1} (they must be 0)")
            if int(bits.sum()) != nnz:
                raise ArtifactError(f"{path}: tensor {name}.mask has {int(bits.sum())} bits set; its config keeps {nnz} of {n} weights")
        elif f"{name}.index" in t:
            idx = t[f"{name}.index"].astype(np.int64)
            if idx.size and idx.max() >= n:
                raise ArtifactError(f"{path}: tensor {name}.index holds position {idx.max()}, outside 0..{n - 1}")
            if np.any(np.diff(idx) <= 0):
                k = int(np.flatnonzero(np.diff(idx) <= 0)[0]) + 1
                raise ArtifactError(f"{path}: tensor {name}.index is not strictly increasing ({idx[k - 1]} then {idx[k]} at {k})")
        if q.mode == "fp32":
            continue
        top = 128 if q.mode == "ptq_int8" else 2 ** (q.bits - 1)  # the largest code magnitude
        if f"{name}.exp" in t:
            exp = t[f"{name}.exp"].astype(np.int64)
            hi = 127 - (q.bits - 1)  # 2^exp x 2^(bits-1) <= 2^127 is a finite float32
            if exp.min() < -126 or exp.max() > hi:
                bad = int(exp.min() if exp.min() < -126 else exp.max())
                raise ArtifactError(
                    f"{path}: tensor {name}.exp holds {bad}, outside -126..{hi} (a normal float32 power of two "
                    f"whose product with a {q.bits}-bit code is finite)"
                )
        else:
            scale = t[f"{name}.scale"].astype(np.float64)
            if np.any(scale <= 0) or np.any(scale * top > FLOAT32_MAX):
                bad = float(scale.min() if np.any(scale <= 0) else scale.max())
                raise ArtifactError(f"{path}: tensor {name}.scale holds {bad:g}; a scale must be > 0, and {top} x scale a finite float32")
        if q.mode == "qat" and np.unpackbits(t[f"{name}.q"], bitorder="little")[nnz * q.bits :].any():
            raise ArtifactError(f"{path}: tensor {name}.q sets unused bits after its {nnz} codes (they must be 0)")


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

"""Run configuration: plain YAML mapped onto dataclasses, with strict field checking."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fsdd.augment import AugmentConfig
from fsdd.features import FeatureConfig


class ConfigError(ValueError):
    """A malformed configuration; the message names the offending field."""


@dataclass(frozen=True)
class ModelConfig:
    hidden_size: int = 128


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"  # cosine | constant
    channel_drop: float = 0.05  # augmentation: probability of zeroing one MFCC channel of a clip
    frame_drop: float = 0.05  # augmentation: probability of zeroing one frame
    dropout: float = 0.0  # dropout on the LSTM's last output, before the Linear layer (training only)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (Szegedy et al., 2016)
    split: str = "random"  # random | official | speaker:NAME | loso:NAME | all (fsdd.splits)
    test_speaker: str | None = None  # kept out of every part of the split (search.run --test-speaker)
    seed: int = 0
    threads: int = 1  # torch threads; Ray runs one trial per CPU


@dataclass(frozen=True)
class PruneConfig:
    """Magnitude pruning steps. Each (epoch, rate) prunes `rate` of the weights still remaining
    at the end of that epoch (Lightning's ModelPruning semantics: rates compound)."""

    schedule: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class QuantConfig:
    mode: str = "fp32"  # fp32 | ptq_int8 | qat
    bits: int = 8  # qat weight bit width, 2-8
    scale: str = "float"  # qat: float (float32 scale) | po2 (power-of-two, fixed point)
    per_channel: bool = False  # qat: one scale per output row instead of per tensor
    warm_start: bool = True  # qat: start from a trained float32 parent of the same shape
    parent_epochs: int | None = None  # float parent's epochs (None: same as train.epochs)
    parent_lr: float | None = None  # float parent's learning rate (None: same as train.lr)
    impl: str = "fast"  # qat: fast (fake-quantized weights, fused LSTM) | quantlstm (Brevitas QuantLSTM)
    bias: str = "fp32"  # biases are stored and computed in float32 in every mode
    act: str = "fp32"  # activations: fp32 (fast path) | int8 (impl=quantlstm only)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["prune"]["schedule"] = [list(s) for s in self.prune.schedule]
        return d

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A copy with some fields of some sections changed, e.g. replace(quant={"bits": 4})."""
        d = self.to_dict()
        for name, fields in sections.items():
            if name not in d:
                raise ConfigError(f"unknown config section {name!r}")
            d[name].update(fields)
        return from_dict(d)


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{where}: epoch must be an integer, got {v!r}")
    return v


def _num(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(f"{where}: rate must be a number, got {v!r}")
    return float(v)


def expand_schedule(raw: Any, where: str = "prune.schedule") -> tuple[tuple[int, float], ...]:
    """Steps as `[epoch, rate]` pairs or `{from: E1, to: E2, rate: R}` ranges (inclusive)."""
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"{where}: expected a list of [epoch, rate] steps")
    steps: list[tuple[int, float]] = []
    for i, s in enumerate(raw):
        if isinstance(s, dict):
            unknown = set(s) - {"from", "to", "rate"}
            if unknown or not {"from", "to", "rate"} <= set(s):
                raise ConfigError(f"{where}[{i}]: a range needs exactly the fields from, to, rate")
            at = f"{where}[{i}]"
            rate = _num(s["rate"], at)
            steps += [(e, rate) for e in range(_int(s["from"], at), _int(s["to"], at) + 1)]
        elif isinstance(s, list | tuple) and len(s) == 2:
            steps.append((_int(s[0], f"{where}[{i}]"), _num(s[1], f"{where}[{i}]")))
        else:
            raise ConfigError(f"{where}[{i}]: expected [epoch, rate] or {{from, to, rate}}, got {s!r}")
    steps.sort()
    epochs = [e for e, _ in steps]
    if len(set(epochs)) != len(epochs):
        raise ConfigError(f"{where}: an epoch appears twice")
    return tuple(steps)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if isinstance(value, list | tuple):
            return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    else:
        return value
    raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")


def _section(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"unknown field '{where}.{key}' (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for key, value in raw.items():
        if cls is PruneConfig and key == "schedule":
            kwargs[key] = expand_schedule(value, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def from_dict(raw: Any) -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    hints = typing.get_type_hints(Config)
    for key in raw:
        if key not in sections:
            raise ConfigError(f"unknown field '{key}' (known: {', '.join(sections)})")
    cfg = Config(**{k: _section(hints[k], v, k) for k, v in raw.items()})
    validate(cfg)
    return cfg


def load_config(path: str | Path) -> Config:
    """Read a YAML config. Raises ConfigError (one line, naming the field) on any problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{at}") from None
    try:
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: Config) -> None:
    """Cross-field checks: ranges, enumerations, and the pruning schedule against training."""
    t, q = cfg.train, cfg.quant
    _check(cfg.model.hidden_size >= 1, "model.hidden_size must be >= 1")
    _check(t.epochs >= 1, "train.epochs must be >= 1")
    _check(t.batch_size >= 1, "train.batch_size must be >= 1")
    _check(t.lr > 0, "train.lr must be > 0")
    _check(t.lr_schedule in ("cosine", "constant"), "train.lr_schedule must be cosine or constant")
    _check(0 <= t.channel_drop < 1 and 0 <= t.frame_drop < 1, "train.channel_drop/frame_drop must be in [0, 1)")
    _check(0 <= t.dropout < 1, f"train.dropout must be in [0, 1), got {t.dropout}")
    _check(0 <= t.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    _check(q.mode in ("fp32", "ptq_int8", "qat"), f"quant.mode must be fp32, ptq_int8 or qat, got {q.mode!r}")
    _check(2 <= q.bits <= 8, f"quant.bits must be in 2-8, got {q.bits}")
    _check(q.scale in ("float", "po2"), f"quant.scale must be float or po2, got {q.scale!r}")
    _check(q.impl in ("fast", "quantlstm"), f"quant.impl must be fast or quantlstm, got {q.impl!r}")
    _check(q.bias == "fp32", "quant.bias: only fp32 biases are supported")
    _check(q.act in ("fp32", "int8"), "quant.act must be fp32 or int8")
    _check(q.act == "fp32" or q.impl == "quantlstm", "quant.act=int8 needs quant.impl=quantlstm")
    _check(
        not (cfg.prune.schedule and q.mode == "qat" and q.impl == "quantlstm"),
        "prune.schedule: pruning is not supported with quant.impl=quantlstm",
    )
    _check(q.parent_epochs is None or q.parent_epochs >= 1, "quant.parent_epochs must be >= 1")
    _check(q.parent_lr is None or q.parent_lr > 0, "quant.parent_lr must be > 0")
    for epoch, rate in cfg.prune.schedule:
        _check(0 <= epoch < t.epochs, f"prune.schedule: epoch {epoch} lies outside training (0..{t.epochs - 1})")
        _check(
            0 < rate < 1,
            f"prune.schedule: rate {rate} at epoch {epoch} must be in (0, 1): 100 % or more would remove every weight",
        )

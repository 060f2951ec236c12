"""Run configuration: plain YAML mapped onto dataclasses, with strict field checking."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fsdd.augment import AugmentConfig
from fsdd.features import FeatureConfig, feature_problem
from fsdd.splits import PROTOCOL_SPEAKERS


class ConfigError(ValueError):
    """A malformed configuration; the message names the offending field. Kept to one line of at
    most MESSAGE_MAX characters: a value quoted in it may be huge (YAML anchors nest cheaply)."""

    MESSAGE_MAX = 400

    def __init__(self, message: str) -> None:
        line = " ".join(str(message).split("\n"))
        super().__init__(line if len(line) <= self.MESSAGE_MAX else line[: self.MESSAGE_MAX - 3] + "...")


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
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{where}: rate must be a finite number, got {v!r}")
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
            first, last = _int(s["from"], at), _int(s["to"], at)
            if first > last:
                raise ConfigError(f"{at}: from ({first}) must not be after to ({last})")
            steps += [(e, rate) for e in range(first, last + 1)]
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
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)  # an int beyond float's range overflows
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):  # YAML's .nan and .inf are floats
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
            return number
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
        # Dataclass checks say "field must be ...": name it as section.field.
        first = str(e).split(" ", 1)[0]
        raise ConfigError(f"{where}.{e}" if first in fields else f"{where}: {e}") from None


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping holding a key twice (PyYAML keeps the last silently,
    so a config could say two things and mean one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise yaml.constructor.ConstructorError(None, None, "a key that is not a plain value", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """The YAML file at `path` (safe types only, no key twice); ConfigError with one line otherwise."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None)
        ours = problem and ("twice" in problem or "plain value" in problem)  # our loader's own words
        raise ConfigError(f"{path}: malformed YAML{at}" + (f" ({problem})" if ours else "")) from None


def load_config(path: str | Path) -> Config:
    """Read a YAML config. Raises ConfigError (one line, naming the field) on any problem."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _in(v: Any, lo: float, hi: float, closed_hi: bool = True) -> bool:
    """lo <= v <= hi (or < hi), for a finite number v (NaN and inf are outside every range)."""
    finite = isinstance(v, int) or (isinstance(v, float) and math.isfinite(v))  # math.isfinite of a huge int overflows
    return finite and lo <= v and (v <= hi if closed_hi else v < hi)


SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range
EPOCHS_MAX = 100_000  # days of training for the smallest model here: any more is a typo
BATCH_MAX = 1 << 20  # far beyond FSDD's 3,000 clips
HIDDEN_MAX = 4096  # 67 M float32 LSTM weights (270 MB): far beyond any flash budget this searches
THREADS_MAX = 1024  # torch accepts more, then crashes (1e5 threads: a segfault)
SPLIT_FORMS = ("random", "official", "all", PROTOCOL_SPEAKERS, "speaker:NAME", "loso:NAME")


def _split_problem(t: TrainConfig) -> str | None:
    """The first problem of train.split / train.test_speaker that needs no data to see."""
    kind, _, name = t.split.partition(":")
    speaker = name if kind in ("speaker", "loso") and name else None
    if t.split not in ("random", "official", "all", PROTOCOL_SPEAKERS) and speaker is None:
        return f"train.split: unknown split {t.split!r}; use one of {', '.join(SPLIT_FORMS)}"
    for where, name in (("train.split", speaker), ("train.test_speaker", t.test_speaker)):
        if name is not None and (not name.strip() or "_" in name):
            return f"{where}: speaker {name!r} cannot be in a file name {{digit}}_{{speaker}}_{{take}}.wav (empty, or holds '_')"
    if speaker is not None and speaker == t.test_speaker:
        return f"train.split {t.split!r} holds out train.test_speaker {t.test_speaker!r}, whose clips are kept out of everything"
    return None


def validate(cfg: Config) -> None:
    """Every field's range and the cross-field rules, before any work. Raises ConfigError, one
    line naming `section.field` and what it allows. Floats must be finite everywhere."""
    m, t, q = cfg.model, cfg.train, cfg.quant
    # Upper bounds keep a typo from ending in an allocation failure or a crash deep inside torch.
    _check(_in(m.hidden_size, 1, HIDDEN_MAX), f"model.hidden_size must be in 1..{HIDDEN_MAX}, got {m.hidden_size}")
    problem = feature_problem(cfg.features)
    _check(problem is None, f"features.{problem}")
    _check(_in(t.epochs, 1, EPOCHS_MAX), f"train.epochs must be in 1..{EPOCHS_MAX}, got {t.epochs}")
    _check(_in(t.batch_size, 1, BATCH_MAX), f"train.batch_size must be in 1..{BATCH_MAX}, got {t.batch_size}")
    _check(_in(t.lr, 0, 1) and t.lr > 0, f"train.lr must be in (0, 1] (Adam's step size), got {t.lr}")
    _check(_in(t.weight_decay, 0, 1), f"train.weight_decay must be in [0, 1], got {t.weight_decay}")
    _check(t.lr_schedule in ("cosine", "constant"), f"train.lr_schedule must be cosine or constant, got {t.lr_schedule!r}")
    for name in ("channel_drop", "frame_drop", "dropout", "label_smoothing"):
        v = getattr(t, name)
        _check(_in(v, 0, 1, closed_hi=False), f"train.{name} must be in [0, 1), got {v}")
    split_problem = _split_problem(t)
    _check(split_problem is None, str(split_problem))
    _check(_in(t.seed, 0, SEED_MAX), f"train.seed must be in 0..{SEED_MAX}, got {t.seed}")
    _check(_in(t.threads, 1, THREADS_MAX), f"train.threads must be in 1..{THREADS_MAX}, got {t.threads}")
    _check(q.mode in ("fp32", "ptq_int8", "qat"), f"quant.mode must be fp32, ptq_int8 or qat, got {q.mode!r}")
    _check(_in(q.bits, 2, 8), f"quant.bits must be in 2-8, got {q.bits}")
    _check(q.scale in ("float", "po2"), f"quant.scale must be float or po2, got {q.scale!r}")
    _check(q.impl in ("fast", "quantlstm"), f"quant.impl must be fast or quantlstm, got {q.impl!r}")
    # Only QAT builds a QuantLSTM; with another mode the run would silently export no artifact.
    _check(q.impl == "fast" or q.mode == "qat", "quant.impl=quantlstm needs quant.mode=qat")
    _check(q.bias == "fp32", f"quant.bias: only fp32 biases are supported, got {q.bias!r}")
    _check(q.act in ("fp32", "int8"), f"quant.act must be fp32 or int8, got {q.act!r}")
    _check(q.act == "fp32" or q.impl == "quantlstm", "quant.act=int8 needs quant.impl=quantlstm")
    _check(
        not (cfg.prune.schedule and q.mode == "qat" and q.impl == "quantlstm"),
        "prune.schedule: pruning is not supported with quant.impl=quantlstm",
    )
    _check(
        q.parent_epochs is None or _in(q.parent_epochs, 1, EPOCHS_MAX),
        f"quant.parent_epochs must be in 1..{EPOCHS_MAX} (or null), got {q.parent_epochs}",
    )
    _check(
        q.parent_lr is None or (_in(q.parent_lr, 0, 1) and q.parent_lr > 0),
        f"quant.parent_lr must be in (0, 1] (or null), got {q.parent_lr}",
    )
    # The best epoch is chosen after the last pruning step (search.train.BestState), so that
    # step must leave at least one epoch to train: steps lie in 0..epochs-2.
    after = "the last pruning step must leave at least one epoch to train after it"
    _check(not cfg.prune.schedule or t.epochs >= 2, f"prune.schedule needs train.epochs >= 2 ({after}), got {t.epochs}")
    epochs = [e for e, _ in cfg.prune.schedule]
    for epoch in (max(epochs), min(epochs)) if epochs else ():  # the last step is the usual offender
        _check(
            0 <= epoch <= t.epochs - 2,
            f"prune.schedule: epoch {epoch} is outside training or leaves no epoch after it: steps must be in 0..{t.epochs - 2} "
            f"(train.epochs - 2: {after})",
        )
    for epoch, rate in cfg.prune.schedule:
        _check(
            _in(rate, 0, 1, closed_hi=False) and rate > 0,
            f"prune.schedule: rate {rate} at epoch {epoch} must be in (0, 1): 100 % or more would remove every weight",
        )

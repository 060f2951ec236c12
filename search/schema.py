"""Typed shapes of everything that crosses a file or a process: the run config, the search space,
the budget, the run settings (search.json), the trial record (record.json), a fold's result, and
the refit of a front member (refit.json). Each is read and written only through fsdd.schema's
strict loader (`load`, `dump`); the configs a user types are read by `load_config` and
`load_search_config` here. Torch-free.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fsdd.errors import ConfigError
from fsdd.files import write_json
from fsdd.schema import (
    AugmentConfig,
    Corpus,
    FeatureConfig,
    Shape,
    SplitName,
    VoicesConfig,
    dump,
    load,
    speaker_problem,
    spec,
)

SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range
EPOCHS_MAX = 100_000  # days of training for the smallest model here: any more is a typo
BATCH_MAX = 1 << 20  # far beyond the data's clips
HIDDEN_MAX = 4096  # 67 M float32 LSTM weights (270 MB): far beyond any flash budget this searches
THREADS_MAX = 1024  # torch accepts more, then crashes (1e5 threads: a segfault)
BUDGET_MAX = 1 << 50  # bytes (1 PiB): beyond it a budget checks nothing
N_CLASSES = 10


# --------------------------------------------------------------------------- the run config


@dataclass(frozen=True)
class ModelConfig(Shape):
    hidden_size: int = spec(128, lo=1, hi=HIDDEN_MAX)


def _split(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected str, got {value!r:.60}")
    return value


@dataclass(frozen=True)
class TrainConfig(Shape):
    epochs: int = spec(40, lo=1, hi=EPOCHS_MAX)
    batch_size: int = spec(32, lo=1, hi=BATCH_MAX)
    lr: float = spec(5e-3, above=0, hi=1)  # Adam's step size
    weight_decay: float = spec(0.0, lo=0, hi=1)
    lr_schedule: str = spec("cosine", choices=("cosine", "constant"))
    channel_drop: float = spec(0.05, lo=0, below=1)  # augmentation: probability of zeroing one MFCC channel of a clip
    frame_drop: float = spec(0.05, lo=0, below=1)  # augmentation: probability of zeroing one frame
    dropout: float = spec(0.0, lo=0, below=1)  # on the LSTM's last output, before the Linear layer (training only)
    label_smoothing: float = spec(0.0, lo=0, below=1)  # cross-entropy label smoothing (Szegedy et al., 2016)
    split: str = spec("random", parse=_split)  # fsdd.schema.SplitName: random | official | speaker:NAME | loso:NAME | all | speakers
    test_speaker: str | None = None  # kept out of every part of the split (search.run --test-speaker)
    folds: int = spec(6, lo=2, hi=100)  # the speaker protocol's folds at most: more real speakers are grouped
    seed: int = spec(0, lo=0, hi=SEED_MAX)
    threads: int = spec(1, lo=1, hi=THREADS_MAX)  # torch threads; Ray runs one trial per CPU

    @property
    def split_name(self) -> SplitName:
        return SplitName.parse(self.split)

    def check(self) -> str | None:
        try:
            name = self.split_name
        except ValueError as e:
            return f"split: {e}"
        if self.test_speaker is not None:
            problem = speaker_problem(self.test_speaker)
            if problem:
                return f"test_speaker: {problem}"
            if name.speaker == self.test_speaker:
                return f"split {self.split!r} holds out test_speaker {self.test_speaker!r}, whose clips are kept out of everything"
        return None


def expand_schedule(raw: Any, where: str = "prune.schedule") -> tuple[tuple[int, float], ...]:
    """Pruning steps as `[epoch, rate]` pairs or `{from: E1, to: E2, rate: R}` ranges (inclusive), sorted."""
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"{where}: expected a list of [epoch, rate] steps")

    def integer(v: Any, at: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{at}: epoch must be an integer, got {v!r:.40}")
        return v

    def rate(v: Any, at: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{at}: rate must be a finite number, got {v!r:.40}")
        return float(v)

    steps: list[tuple[int, float]] = []
    for i, s in enumerate(raw):
        at = f"{where}[{i}]"
        if isinstance(s, dict):
            if set(s) != {"from", "to", "rate"}:
                raise ConfigError(f"{at}: a range needs exactly the fields from, to, rate")
            first, last, r = integer(s["from"], at), integer(s["to"], at), rate(s["rate"], at)
            if first > last:
                raise ConfigError(f"{at}: from ({first}) must not be after to ({last})")
            if last - first > EPOCHS_MAX:
                raise ConfigError(f"{at}: a range of more than {EPOCHS_MAX} epochs")
            steps += [(e, r) for e in range(first, last + 1)]
        elif isinstance(s, list | tuple) and len(s) == 2:
            steps.append((integer(s[0], at), rate(s[1], at)))
        else:
            raise ConfigError(f"{at}: expected [epoch, rate] or {{from, to, rate}}, got {s!r:.60}")
    steps.sort()
    if len({e for e, _ in steps}) != len(steps):
        raise ConfigError(f"{where}: an epoch appears twice")
    return tuple(steps)


@dataclass(frozen=True)
class PruneConfig(Shape):
    """Magnitude pruning steps. Each (epoch, rate) prunes `rate` of the weights still remaining at
    the end of that epoch (Lightning's ModelPruning semantics: rates compound)."""

    schedule: tuple[tuple[int, float], ...] = spec((), parse=expand_schedule)

    def check(self) -> str | None:
        for epoch, rate in self.schedule:
            if not 0 < rate < 1:
                return f"schedule: rate {rate} at epoch {epoch} must be in (0, 1): 100 % or more would remove every weight"
        return None


QUANTLSTM_REFUSED = (
    "quantlstm (Brevitas QuantLSTM) is not supported: an artifact cannot hold its per-gate quantizers and integer "
    "activations, so it could not be exported; impl: fast trains the same Brevitas weight quantizers on the fused LSTM"
)


def _impl(value: Any, where: str) -> str:
    if value == "quantlstm":
        raise ConfigError(f"{where}: {QUANTLSTM_REFUSED}")
    if value != "fast":
        raise ConfigError(f"{where} must be fast, got {value!r:.40}")
    return value


def _act(value: Any, where: str) -> str:
    if value == "int8":
        raise ConfigError(f"{where}: int8 activations need impl: quantlstm, which is not supported: {QUANTLSTM_REFUSED}")
    if value != "fp32":
        raise ConfigError(f"{where} must be fp32, got {value!r:.40}")
    return value


@dataclass(frozen=True)
class QuantConfig(Shape):
    mode: str = spec("fp32", choices=("fp32", "ptq_int8", "qat"))
    bits: int = spec(8, lo=2, hi=8)  # qat weight bit width
    scale: str = spec("float", choices=("float", "po2"))  # qat: float32 scale, or power of two (fixed point)
    per_channel: bool = False  # qat: one scale per output row instead of per tensor
    warm_start: bool = True  # qat: start from a trained float32 parent of the same shape
    parent_epochs: int | None = spec(None, lo=1, hi=EPOCHS_MAX)  # float parent's epochs (None: train.epochs)
    parent_lr: float | None = spec(None, above=0, hi=1)  # float parent's learning rate (None: train.lr)
    impl: str = spec("fast", parse=_impl)  # fake-quantized weights (Brevitas quantizers) in the fused LSTM kernel
    bias: str = spec("fp32", choices=("fp32",))  # biases are stored and computed in float32 in every mode
    act: str = spec("fp32", parse=_act)  # activations are float32 in every mode


@dataclass(frozen=True)
class Config(Shape):
    """One training run: `python -m search.train --config FILE` (configs/baseline.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    voices: VoicesConfig = field(default_factory=VoicesConfig)  # synthetic voices in training (none by default)

    def check(self) -> str | None:
        epochs = self.train.epochs
        steps = [e for e, _ in self.prune.schedule]
        # The best epoch is chosen after the last pruning step (search.fit.BestState), so that step
        # must leave at least one epoch to train: steps lie in 0..epochs-2.
        after = "the last pruning step must leave at least one epoch to train after it"
        if steps and epochs < 2:
            return f"prune.schedule needs train.epochs >= 2 ({after}), got {epochs}"
        for e in (max(steps), min(steps)) if steps else ():
            if not 0 <= e <= epochs - 2:
                return (
                    f"prune.schedule: epoch {e} is outside training or leaves no epoch after it: steps must be in "
                    f"0..{epochs - 2} (train.epochs - 2: {after})"
                )
        return None

    def to_dict(self) -> dict[str, Any]:
        return dump(self)

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A copy with some fields of some sections changed, e.g. replace(quant={"bits": 4}); checked
        as a config read from a file is (ConfigError naming the field)."""
        d = self.to_dict()
        for name, fields in sections.items():
            if name not in d:
                raise ConfigError(f"unknown config section {name!r}")
            d[name].update(fields)
        return from_dict(d)


def from_dict(raw: Any) -> Config:
    """A Config from parsed JSON/YAML (None: the defaults); ConfigError whose line names `section.field`."""
    return load(Config, raw)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping holding a key twice (PyYAML keeps the last silently,
    so a config could say two things and mean one) or a key that is not a plain value."""

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


def read_yaml(path: str | Path) -> Any:
    """The YAML file at `path` (safe types only, no key twice); ConfigError with one line otherwise."""
    path = Path(path)
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
    """Read a run config (YAML). ConfigError with one line naming the file and the field."""
    raw = read_yaml(path)
    try:
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# --------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class Space(Shape):
    """What the search chooses (configs/search.yaml `space:`); empty front-end lists mean the base's."""

    hidden_sizes: tuple[int, ...] = spec((4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128), lo=1, hi=HIDDEN_MAX)
    n_mfcc: tuple[int, ...] = spec((8, 10, 13, 16), lo=1)
    hop_length: tuple[int, ...] = spec((160, 200, 240), lo=1)
    n_fft: tuple[int, ...] = spec((), lo=16, hi=8192)  # FFT lengths to choose from; the C library needs powers of two
    n_mels: tuple[int, ...] = spec((), lo=1)  # mel bands to choose from: fewer bands, smaller tables on the chip
    cmvn: tuple[str, ...] = spec((), choices=("none", "mean", "meanvar"))
    lr: tuple[float, float] = spec((2e-3, 2e-2), above=0, hi=1)  # [low, high], log-uniform
    quant_modes: tuple[str, ...] = spec(("fp32", "ptq_int8", "qat"), choices=("fp32", "ptq_int8", "qat"))
    qat_bits: tuple[int, int] = spec((2, 8), lo=2, hi=8)  # [low, high]
    qat_scales: tuple[str, ...] = spec(("float", "po2"), choices=("float", "po2"))
    qat_per_channel: tuple[bool, ...] = (False, True)
    qat_warm_start: tuple[bool, ...] = (True, False)
    qat_epochs: int = spec(15, lo=2, hi=EPOCHS_MAX)  # fine-tuning epochs of a warm-started QAT child
    prune: bool = True  # search pruning at all
    prune_sparsity: tuple[float, float] = spec((0.2, 0.9), above=0, below=1)  # [low, high] final fraction of pruned weights
    prune_max_steps: int = spec(4, lo=1, hi=100)

    def check(self) -> str | None:
        required = ("hidden_sizes", "n_mfcc", "hop_length", "quant_modes", "qat_scales", "qat_per_channel", "qat_warm_start")
        empty = next((n for n in required if not getattr(self, n)), None)
        if empty:
            return f"{empty}: expected a non-empty list"
        for name in ("lr", "qat_bits", "prune_sparsity"):
            lo, hi = getattr(self, name)
            if lo > hi:
                return f"{name}: [low, high] with low <= high, got {[lo, hi]}"
        return None


@dataclass(frozen=True)
class SearchConfig(Shape):
    """A search's config file (configs/search.yaml): the `base` run config of every trial and the `space`."""

    base: Config = field(default_factory=Config)
    space: Space = field(default_factory=Space)


BUDGET_ON = ("weights", "flash")


@dataclass(frozen=True)
class Budget(Shape):
    """What every model of a search must fit. `on` says what `bytes` counts: the artifact's payload
    (`weights`, search.size.size_bytes), or the whole C library on a Cortex-M4 (`flash`: weights,
    front-end tables and code, as search.deploy.predict_flash predicts it before training).
    `ram_bytes`, if set, bounds the library's RAM (static + stack), predicted the same way.
    search.space.over prices a configuration against it."""

    bytes: int = spec(lo=1, hi=BUDGET_MAX)
    on: str = spec("weights", choices=BUDGET_ON)
    ram_bytes: int | None = spec(None, lo=1, hi=BUDGET_MAX)

    @property
    def kib(self) -> float:
        return self.bytes / 1024


def is_plain_name(name: str) -> bool:
    """A run name is one folder inside --out: not empty, no path separator, not . or .., printable."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and name.isprintable()


def _run_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not is_plain_name(value):
        raise ConfigError(f"{where}: {value!r:.60} is not a plain folder name (no '/', not '.' or '..')")
    return value


@dataclass(frozen=True)
class RunSettings(Shape):
    """A search run's settings, written once to RUN/search.json when it starts and read by
    --resume and export: everything needed to continue or export it."""

    name: str = spec(parse=_run_name)
    budget: Budget = spec()
    base: Config = spec()
    space: Space = spec()
    trials: int = spec(lo=1, hi=1 << 30)
    time_budget_s: float = spec(above=0, below=2.0**40)
    cpus_per_trial: int = spec(1, lo=1, hi=THREADS_MAX)
    sampler: str = spec("tpe", choices=("tpe", "random"))
    corpora: tuple[Corpus, ...] = ()  # the data, real corpora first
    cache_dir: str | None = None
    started: str = ""

    @property
    def search(self) -> SearchConfig:
        return SearchConfig(self.base, self.space)


# --------------------------------------------------------------------------- trials and the front


@dataclass(frozen=True)
class FoldResult(Shape):
    """One fold's held-out speaker: clip count, correct predictions, summed cross-entropy (nats),
    and the confusion matrix (`confusion[said][predicted]`, N_CLASSES x N_CLASSES clip counts)."""

    speaker: str
    n: int = spec(lo=1)
    correct: int = spec(lo=0)
    loss_sum: float = spec(lo=0)
    confusion: tuple[tuple[int, ...], ...] = ()

    @property
    def acc(self) -> float:
        return self.correct / self.n


@dataclass(frozen=True)
class TrialRecord(Shape):
    """A finished trial (RUN/trials/NAME/record.json, written by the trial before its last report:
    a trial that has it trained to the end). `val_acc`/`val_loss` are what the search ranks:
    validation figures of a single split, or pooled over the held-out speakers of the folds."""

    trial_id: str
    trial_name: str
    params: dict[str, Any]  # the searched parameters, as the searcher drew them
    config: Config
    quant: str
    size_bytes: int = spec(lo=0, hi=BUDGET_MAX)
    cost_bytes: int = spec(lo=0, hi=BUDGET_MAX)  # what the budget counts (search.space.cost)
    val_acc: float = spec(lo=0, hi=1)
    val_loss: float = spec(lo=0)
    sparsity: float = spec(0.0, lo=0, hi=1)
    folds: tuple[FoldResult, ...] = ()  # the speaker protocol's held-out speakers
    split_hash: str | None = None  # a single split's
    n_params: int = 0
    trial_s: float = 0.0


@dataclass(frozen=True)
class Refit(Shape):
    """A front member made deployable (RUN/refit/NAME/refit.json beside its model.safetensors and
    predictions.json): retrained on every speaker, or the trial's own model for a single split."""

    config: Config
    test_acc: float | None  # on the test set (or test speaker), once; None without one
    verify_acc: float | None  # the numpy reference's accuracy on the scored clips
    verify_agree: float | None  # the numpy reference's agreement with torch's predictions
    scored: str  # which clips: test, or train (an `all` refit has no test set)


def read_json_shape(cls: type, path: Path, what: str) -> Any:
    """A shape read from a JSON file the program wrote: one ConfigError line naming the file if it
    is unreadable, cut short or not that shape (a damaged run folder)."""
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what} ({e.strerror})") from None
    except (ValueError, RecursionError):
        raise ConfigError(f"{path}: not a readable {what} (cut short or not JSON)") from None
    try:
        return load(cls, raw, what)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def write_shape(path: Path, shape: Any) -> None:
    """A shape as JSON, written atomically."""
    write_json(path, dump(shape))


def load_search_config(path: str | Path) -> SearchConfig:
    """A search config file: `base` (a run Config) and `space`. ConfigError naming the file and field."""
    raw = read_yaml(path)
    try:
        return load(SearchConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None

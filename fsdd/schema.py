"""Typed shapes with one strict loader: the data side's shapes (front end, augmentation, split names)
and the machinery every shape of the project (search.schema too) is read and checked with.

A shape is a frozen dataclass deriving from `Shape`. Its fields carry their rules as metadata
(`spec(default, lo=, hi=, choices=)`), checked when an instance is made, wherever it comes from;
rules between fields live in its `check()`. `load(cls, raw, where)` builds one from parsed
JSON/YAML: unknown fields, wrong types and broken rules are a ConfigError of one line naming the
field as `where.field`. `dump(shape)` gives the JSON form that `load` reads back. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fsdd.errors import ConfigError

SAMPLE_RATE = 8000  # Hz: FSDD's rate; wavs at another rate are refused, not resampled


def spec(
    default: Any = dataclasses.MISSING,
    *,
    lo: float | None = None,
    hi: float | None = None,
    above: float | None = None,
    below: float | None = None,
    choices: tuple | None = None,
    parse: Callable[[Any, str], Any] | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with its rules: lo <= v <= hi, above < v < below, v in choices (for a
    tuple, every element), or `parse(raw, where)` to read a special raw form. None is allowed
    where the type is Optional."""
    meta = {
        k: v
        for k, v in (("lo", lo), ("hi", hi), ("above", above), ("below", below), ("choices", choices), ("parse", parse))
        if v is not None
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _range(m: dict) -> str:
    lo = f"[{m['lo']:g}" if "lo" in m else f"({m['above']:g}" if "above" in m else "(-inf"
    hi = f"{m['hi']:g}]" if "hi" in m else f"{m['below']:g})" if "below" in m else "inf)"
    if "lo" in m and "hi" in m and isinstance(m["lo"], int) and isinstance(m["hi"], int):
        return f"{m['lo']}..{m['hi']}"
    return f"{lo}, {hi}"


def _rule_problem(name: str, value: Any, m: dict) -> str | None:
    items = value if isinstance(value, tuple) else (value,)
    for v in items:
        if v is None or isinstance(v, Shape):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            return f"{name} must be a finite number, got {value!r}"
        if "choices" in m and v not in m["choices"]:
            return f"{name} must be one of {', '.join(map(str, m['choices']))}, got {value!r}"
        if isinstance(v, int | float) and not isinstance(v, bool):
            ok = ("lo" not in m or v >= m["lo"]) and ("hi" not in m or v <= m["hi"])
            ok = ok and ("above" not in m or v > m["above"]) and ("below" not in m or v < m["below"])
            if not ok:
                return f"{name} must be in {_range(m)}, got {value!r}"
    return None


class Shape:
    """Base of every typed shape: checks each field's rules, then `check()`, when an instance is made.
    ValueError names the field first ("n_fft must be ..."), so that `load` can prefix its section."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            problem = _rule_problem(f.name, getattr(self, f.name), f.metadata)
            if problem:
                raise ValueError(problem)
        problem = self.check()
        if problem:
            raise ValueError(problem)

    def check(self) -> str | None:
        """The first rule between fields that this instance breaks, as one line naming a field; None if none."""
        return None

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed, checked like any new instance (ValueError)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` (parsed JSON/YAML) as type `tp`: ints are not bools, an int is a float, a list is a
    tuple, a mapping is a nested Shape; ConfigError naming `where` otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, Shape):
        return load(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)}, got {_show(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        return dict(value)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float:
        if isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]+[eE][-+]?[0-9]+", value):  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)  # an int beyond float's range overflows: refused below as not finite
            except OverflowError:
                return math.inf
    if tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_show(value)}")


def _show(value: Any, width: int = 60) -> str:
    """repr of a value for a one-line message: escaped and short."""
    r = repr(value)
    return r if len(r) <= width else r[: width - 3] + "..."


def load(cls: type, raw: Any, where: str = "") -> Any:
    """An instance of the Shape `cls` from parsed JSON/YAML `raw` (None: every default). ConfigError
    with one line naming the field (`where.field`) for an unknown field, a wrong type or a broken rule."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'top level'}: expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = next((k for k in raw if k not in fields), None)
    if unknown is not None:
        raise ConfigError(f"unknown field '{_at(where, unknown)}' (known: {', '.join(fields)})")
    kwargs = {}
    for key, value in raw.items():
        tp = hints[key]
        if value is None and isinstance(tp, type) and issubclass(tp, Shape):
            continue  # `augment:` with nothing under it is the field's own default, not the class's
        at = _at(where, key)
        parse = fields[key].metadata.get("parse")
        kwargs[key] = parse(value, at) if parse else _coerce(value, tp, at)
    missing = [
        n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where or 'top level'}: lacks {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ValueError as e:
        first = str(e).split(" ", 1)[0].rstrip(":")
        raise ConfigError(_at(where, str(e)) if first.split(".")[0] in fields or not where else f"{where}: {e}") from None


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def dump(shape: Any) -> Any:
    """The JSON form of a shape (nested shapes as mappings, tuples as lists), which `load` reads back."""
    if dataclasses.is_dataclass(shape) and not isinstance(shape, type):
        return {f.name: dump(getattr(shape, f.name)) for f in dataclasses.fields(shape)}
    if isinstance(shape, tuple | list):
        return [dump(v) for v in shape]
    if isinstance(shape, dict):
        return {k: dump(v) for k, v in shape.items()}
    return shape


# --------------------------------------------------------------------------- names and splits

SPEAKERS = "speakers"  # the speaker protocol: held-out-speaker folds in turn (not one split)
SPLIT_FORMS = ("random", "official", "all", "eval", SPEAKERS, "speaker:NAME", "loso:NAME", "fold:K/N")


def speaker_problem(name: str) -> str | None:
    """Why `name` cannot name a speaker, or None. A speaker is the middle field of
    `{digit}_{speaker}_{take}.wav`, so it is printable, not blank and holds no '_'; with several
    corpora it is qualified as `corpus/speaker` (one '/', both sides non-empty)."""
    if not name.strip() or not name.isprintable() or "_" in name:
        return f"speaker {name!r} cannot be in a file name {{digit}}_{{speaker}}_{{take}}.wav (empty, unprintable, or holds '_')"
    parts = name.split("/")
    if len(parts) > 2 or not all(p.strip() for p in parts):
        return f"speaker {name!r}: a speaker is NAME or CORPUS/NAME"
    return None


@dataclass(frozen=True)
class SplitName:
    """A split as written in configs, artifacts and on the command line (docs/artifact.md section 6):
    `random`, `official`, `all`, `speakers` (every fold in turn), `speaker:NAME` (NAME is the test
    set, validation from the rest), `loso:NAME` (NAME held out, no validation), `fold:K/N` (the K-th
    of N held-out speaker groups, 1-based; fsdd.splits.fold_groups), `eval` (every clip is the test
    set: a trained model scored on recordings it never saw, `search.verify --split eval`)."""

    kind: str
    speaker: str | None = None
    fold: tuple[int, int] | None = None

    @classmethod
    def parse(cls, text: str) -> SplitName:
        """ValueError with one line if `text` is none of SPLIT_FORMS."""
        kind, sep, arg = text.partition(":")
        if not sep and text in ("random", "official", "all", "eval", SPEAKERS):
            return cls(text)
        if kind in ("speaker", "loso") and sep:
            problem = speaker_problem(arg)
            if problem:
                raise ValueError(f"split {text!r}: {problem}")
            return cls(kind, speaker=arg)
        m = re.fullmatch(r"fold:([1-9][0-9]{0,2})/([1-9][0-9]{0,2})", text)  # no leading zeros: one spelling per split
        if m and int(m[1]) <= int(m[2]):
            return cls("fold", fold=(int(m[1]), int(m[2])))
        if kind == "fold" and sep:
            raise ValueError(f"split {text!r}: fold:K/N needs 1 <= K <= N <= 999, written without leading zeros")
        raise ValueError(f"unknown split {text!r}; use one of {', '.join(SPLIT_FORMS)}")

    @property
    def holds_out(self) -> bool:
        """A fold of the speaker protocol: held-out speakers, no validation set (the epoch is fixed)."""
        return self.kind in ("loso", "fold")

    @property
    def has_val(self) -> bool:
        return self.kind in ("random", "official", "speaker")

    def __str__(self) -> str:
        if self.speaker is not None:
            return f"{self.kind}:{self.speaker}"
        if self.fold is not None:
            return f"fold:{self.fold[0]}/{self.fold[1]}"
        return self.kind


# --------------------------------------------------------------------------- front end and augmentation

CMVN_KINDS = ("none", "mean", "meanvar")
N_FFT_MAX = 8192  # 1 s at 8 kHz: clips are padded to n_fft and framed every hop (2^20 ran out of memory)


@dataclass(frozen=True)
class FeatureConfig(Shape):
    """Everything that determines a clip's features (docs/artifact.md section 4): part of every
    cache key and artifact. Read by the training front end (fsdd.features, torchaudio), the numpy
    reference (search.verify) and the C library (search.deploy) alike."""

    sample_rate: int = spec(SAMPLE_RATE, choices=(SAMPLE_RATE,))
    n_mfcc: int = spec(13, lo=1)
    n_fft: int = spec(400, lo=16, hi=N_FFT_MAX)  # 50 ms window at 8 kHz (torchaudio's MFCC default)
    win_length: int | None = spec(None, lo=1)  # None: n_fft
    hop_length: int = spec(200, lo=1)  # 25 ms: short sequences train better here than 10 ms hops (measured)
    n_mels: int = spec(40, lo=1)
    f_min: float = spec(0.0, lo=0)
    f_max: float | None = spec(None, above=0)  # None: sample_rate / 2
    top_db: float | None = spec(80.0, above=0)  # dynamic range of the log-mel spectrogram (torchaudio's default); None: no clamp
    trim_db: float | None = spec(40.0, above=0)  # silence trimming threshold; None: no trimming
    cmvn: str = spec("none", choices=CMVN_KINDS)  # per-utterance cepstral normalisation, applied after the cache

    @property
    def win(self) -> int:
        """The window length in samples, resolved."""
        return self.n_fft if self.win_length is None else self.win_length

    @property
    def fmax(self) -> float:
        """The top of the mel filterbank in Hz, resolved."""
        return self.sample_rate / 2 if self.f_max is None else float(self.f_max)

    def check(self) -> str | None:
        nyquist = self.sample_rate / 2
        rules = [
            (self.win <= self.n_fft, f"win_length must be in 1..n_fft ({self.n_fft}) or null, got {self.win_length}"),
            (self.hop_length <= self.win, f"hop_length must be in 1..win_length ({self.win}), got {self.hop_length}"),
            (self.n_mels <= self.n_fft // 2 + 1, f"n_mels must be in 1..n_fft/2+1 ({self.n_fft // 2 + 1}), got {self.n_mels}"),
            (self.n_mfcc <= self.n_mels, f"n_mfcc must be in 1..n_mels ({self.n_mels}), got {self.n_mfcc}"),
            (self.fmax <= nyquist, f"f_max must be in (0, sample_rate/2] = (0, {nyquist:g}] Hz (or null), got {self.fmax:g}"),
            (self.f_min < self.fmax, f"f_min must be in [0, f_max) = [0, {self.fmax:g}) Hz, got {self.f_min:g}"),
        ]
        return next((msg for ok, msg in rules if not ok), None)

    def to_dict(self) -> dict[str, Any]:
        return dump(self)


def _factors(name: str, v: tuple[float, ...]) -> str | None:
    if any(not (0.5 <= f <= 2.0) or f == 1.0 for f in v) or len(set(v)) != len(v):
        return f"{name} must be distinct factors in [0.5, 2] other than 1 (1 is the original), got {list(v)}"
    # Hundredths: 8000 Hz x factor is then a multiple of 80 Hz, so resampling ratios stay small
    # (0.5001 would resample 4001 -> 8000 Hz, ten times slower).
    if any(abs(f * 100 - round(f * 100)) > 1e-9 for f in v):
        return f"{name} must be multiples of 0.01, got {list(v)}"
    return None


TIME_MASKS_MAX = 32  # SpecAugment uses 1-2 per utterance; beyond a clip's frames they only cost time
TIME_MASK_FRAMES_MAX = 1024  # frames (a clip of FSDD is at most ~230)


@dataclass(frozen=True)
class AugmentConfig(Shape):
    """What the training clips may look like besides themselves; never applied at evaluation.

    speeds: speed perturbation factors (Ko et al., 2015): each clip resampled to play `factor`
        times faster, which shifts pitch and formants like another vocal tract.
    tempos: tempo perturbation factors: MFCC frames taken `factor` times further apart
        (hop_length * factor): the word faster or slower, pitch and formants unchanged.
    noise_snr_db: if set, every variant (the original included) also gets a copy with white
        noise at this signal-to-noise ratio (dB, over the clip's mean power).
    time_masks, time_mask_frames: SpecAugment time masking (Park et al., 2019): this many masks
        per training clip, each zeroing up to this many consecutive frames, per batch.
    chains: this many re-recorded variants of every clip, each by a random chain that imitates
        another speaker, microphone and room (fsdd.perturb.rerecord: speed, VTLP, pitch shift,
        simulated room, microphone colouring, coloured noise).
    Each epoch draws one variant per training clip, so an epoch costs what it did without.
    """

    speeds: tuple[float, ...] = ()
    tempos: tuple[float, ...] = ()
    noise_snr_db: float | None = spec(None, lo=-10, hi=60)
    chains: int = spec(0, lo=0, hi=64)
    time_masks: int = spec(0, lo=0, hi=TIME_MASKS_MAX)
    time_mask_frames: int = spec(0, lo=0, hi=TIME_MASK_FRAMES_MAX)

    def check(self) -> str | None:
        return _factors("speeds", self.speeds) or _factors("tempos", self.tempos)

    def to_dict(self) -> dict[str, Any]:
        return dump(self)


# --------------------------------------------------------------------------- corpora


def corpus_name_problem(name: str) -> str | None:
    """Why `name` cannot name a corpus, or None: it prefixes speakers (`corpus/speaker`) and clips."""
    if not name or not name.isprintable() or any(c in name for c in "/\\:_ ") or name in (".", ".."):
        return f"corpus name {name!r} must be printable, non-empty, without '/', '\\\\', ':', '_' or spaces"
    return None


@dataclass(frozen=True)
class Corpus(Shape):
    """One folder of clips named `{digit}_{speaker}_{take}.wav`. A `train_only` corpus (synthetic
    voices) only ever trains: its speakers are never held out and its clips never scored."""

    name: str
    path: str
    train_only: bool = False

    def check(self) -> str | None:
        problem = corpus_name_problem(self.name)
        return f"name: {problem}" if problem else None


# --------------------------------------------------------------------------- synthetic voices (fsdd.synth)

ENGINES = ("espeak", "flite", "festival", "piper")
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029")
# espeak-ng 1.51's variants (espeak-ng-data/voices/!v) that sound like a person. Left out: the robots
# (robosoft*, UniRobot, anikaRobot, announcer), the whispers (whisper, whisperf, caleb: no voicing),
# the effects (Demonic, Tweaky, croak, Storm, RicishayMax*: echo), "fast" (a speed test) and
# "Mr serious" (a space in its file name).
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Denis", "Diogo", "Gene", "Gene2", "Henrique", "Hugo",
    "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "adam", "anika", "antonio", "aunty", "belinda",
    "benjamin", "boris", "david", "ed", "edward", "edward2", "grandma", "grandpa", "gustave", "iven", "iven2", "iven3",
    "iven4", "john", "kaukovalta", "linda", "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro",
    "quincy", "rob", "robert", "sandro", "shelby", "steph", "steph2", "steph3", "travis", "victor", "zac",
)  # fmt: skip
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_VOICES = ("kal", "ked", "slt")
PIPER_VOICES = ("joe",)


SYNTH_CLIPS_MAX = 100_000  # 31x the default plan; each clip is also re-recorded `voices.augment.chains` times


@dataclass(frozen=True)
class SynthConfig(Shape):
    """What fsdd.synth synthesizes. Every clip says one digit word; its settings are drawn from the ranges below.

    Voices: `espeak` gives `espeak_variants` variants (drawn with `seed` from ESPEAK_VARIANTS) in each
    of `espeak_accents`, `espeak_takes` takes each per digit; `flite`/`festival`/`piper` give the
    listed voices, `takes` takes each per digit. Ranges are (low, high), drawn uniformly per clip
    from numpy.random.default_rng seeded by (`seed`, speaker, digit, take), so one clip's settings do
    not depend on which others are made. `stretch` is a duration factor (1 = the engine's default
    rate, 1.2 = 20 % slower); `pitch` an f0 factor for flite (`f0_shift`; not rms) and festival
    kal/ked (target f0 mean and std); `espeak_pitch` espeak-ng's `-p` (0-99, default 50);
    `piper_noise`/`piper_noise_w` Piper's noise_scale/noise_w_scale (voice defaults 0.667/0.8);
    `peak` each clip's peak level (full scale = 1). Festival slt (HTS) and Piper have no pitch control.
    """

    engines: tuple[str, ...] = spec((), choices=ENGINES)  # empty: every engine installed here (fsdd.synth.resolve)
    seed: int = spec(0, lo=0, hi=2**32 - 1)
    espeak_accents: tuple[str, ...] = spec(ESPEAK_ACCENTS, choices=ESPEAK_ACCENTS)
    espeak_variants: int = spec(30, lo=1, hi=len(ESPEAK_VARIANTS))
    espeak_takes: int = spec(1, lo=1, hi=1000)
    flite_voices: tuple[str, ...] = spec(FLITE_VOICES, choices=FLITE_VOICES)
    festival_voices: tuple[str, ...] = spec(FESTIVAL_VOICES, choices=FESTIVAL_VOICES)
    piper_voices: tuple[str, ...] = spec(PIPER_VOICES, choices=PIPER_VOICES)
    takes: int = spec(12, lo=1, hi=1000)
    stretch: tuple[float, float] = spec((0.8, 1.25), lo=0.5, hi=2.0)
    pitch: tuple[float, float] = spec((0.85, 1.2), lo=0.5, hi=2.0)
    espeak_pitch: tuple[int, int] = spec((30, 70), lo=0, hi=99)
    piper_noise: tuple[float, float] = spec((0.45, 0.85), lo=0.0, hi=2.0)
    piper_noise_w: tuple[float, float] = spec((0.5, 1.1), lo=0.0, hi=2.0)
    peak: tuple[float, float] = spec((0.2, 0.5), lo=0.01, hi=0.99)

    def check(self) -> str | None:
        lists = ("engines", "espeak_accents", "flite_voices", "festival_voices", "piper_voices")
        for name in lists:
            v = getattr(self, name)
            if len(set(v)) != len(v):
                return f"{name} names one entry twice: {list(v)}"
        if not self.espeak_accents:
            return "espeak_accents is empty"
        empty = next((e for e in ("flite", "festival", "piper") if e in self.engines and not getattr(self, f"{e}_voices")), None)
        if empty:
            return f"{empty}_voices is empty, but engines has {empty}"
        for name in ("stretch", "pitch", "espeak_pitch", "piper_noise", "piper_noise_w", "peak"):
            lo, hi = getattr(self, name)
            if lo > hi:
                return f"{name} must be (low, high) with low <= high, got {[lo, hi]}"
        if self.most_clips() > SYNTH_CLIPS_MAX:
            field = "espeak_takes" if self.espeak_takes * len(self.espeak_accents) * self.espeak_variants > self.takes else "takes"
            return f"{field}: up to {self.most_clips():,} clips planned, more than {SYNTH_CLIPS_MAX:,}; lower takes or espeak_takes"
        return None

    def most_clips(self) -> int:
        """Clips planned if every engine is installed: 10 digits x (espeak's accents x variants x
        takes + every other engine's voices x takes)."""
        others = len(self.flite_voices) + len(self.festival_voices) + len(self.piper_voices)
        return 10 * (len(self.espeak_accents) * self.espeak_variants * self.espeak_takes + others * self.takes)


@dataclass(frozen=True)
class VoicesConfig(Shape):
    """Synthetic voices that join training (fsdd.synth), as a training-only corpus: never held out,
    never scored, never in the normalisation statistics or a split's name. `synth`: what to
    synthesize (None: no synthetic voices); `share`: the fraction of each epoch's training clips
    drawn from them (drawn anew each epoch); `augment`: their own variants (the real clips' are the
    run's `augment`), by default re-recordings that imitate real rooms and microphones."""

    synth: SynthConfig | None = None
    share: float = spec(0.5, above=0, below=1)
    augment: AugmentConfig = dataclasses.field(default_factory=lambda: AugmentConfig(chains=6))

    def check(self) -> str | None:
        if self.augment.time_masks or self.augment.time_mask_frames:
            # SpecAugment masks apply to every training batch, synthetic clips included: one place for them
            return "augment.time_masks: SpecAugment's time masks apply to every batch; set them in the run's augment, not voices.augment"
        return None

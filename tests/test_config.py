"""Tests for search.config: strict YAML loading, field-naming errors, validation, schedules."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsdd.errors import ConfigError
from search.schema import Config, SearchConfig, expand_schedule, from_dict, load_config, load_search_config
from search.space import define, smallest_size, start_points, to_config

REPO = Path(__file__).resolve().parents[1]
STUDY_SCHEDULE = [[10, 0.5], [20, 0.25], {"from": 30, "to": 50, "rate": 0.01}]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    msg = str(e.value)
    assert "\n" not in msg.strip(), "config errors are one line"
    return msg


def test_load_baseline() -> None:
    cfg = load_config(REPO / "configs" / "baseline.yaml")
    assert cfg.model.hidden_size == 128
    assert cfg.features.n_mfcc == 13 and cfg.features.hop_length == 200
    assert cfg.train.epochs == 40 and cfg.train.split == "random" and cfg.train.seed == 0
    assert cfg.quant.mode == "fp32"
    assert cfg.prune.schedule == ()


SEARCH_CONFIGS = ("search.yaml", "on-chip.yaml")  # `base` + `space`: for search.run
RUN_CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml") if p.name not in SEARCH_CONFIGS)


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=str)
def test_every_shipped_config_loads(path: str) -> None:
    assert isinstance(load_config(REPO / path), Config)


@pytest.mark.parametrize("name", SEARCH_CONFIGS)
def test_search_configs_load(name: str) -> None:
    from search.schema import load_search_config

    sc = load_search_config(REPO / "configs" / name)
    assert sc.base.train.epochs >= 10 and "qat" in sc.space.quant_modes


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_unknown_top_level_field(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "model: {hidden_size: 8}\ntrainer: {epochs: 3}\n")
    assert "'trainer'" in msg and "cfg.yaml" in msg


@pytest.mark.parametrize(
    "text, field",
    [("train: {lrr: 1}", "train.lrr"), ("features: {n_mfc: 13}", "features.n_mfc"), ("quant: {bit: 4}", "quant.bit")],
)
def test_unknown_nested_field(tmp_path: Path, text: str, field: str) -> None:
    assert f"'{field}'" in error_of(tmp_path, text)


@pytest.mark.parametrize(
    "text, field",
    [
        ('model: {hidden_size: "big"}', "model.hidden_size"),
        ("model: {hidden_size: 12.5}", "model.hidden_size"),
        ("train: {epochs: true}", "train.epochs"),
        ("train: {lr: fast}", "train.lr"),
        ("quant: {per_channel: 1}", "quant.per_channel"),
        ("train: {split: 3}", "train.split"),
        ("model: 5", "model"),
    ],
)
def test_wrong_type_names_field(tmp_path: Path, text: str, field: str) -> None:
    assert field in error_of(tmp_path, text)


def test_int_accepted_for_float_and_null_for_optional(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "train: {lr: 1}\nfeatures: {f_max: null, trim_db: null}\n"))
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.features.f_max is None and cfg.features.trim_db is None


def test_malformed_yaml(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "model: [1, 2\ntrain: {epochs: 3\n")
    assert "malformed" in msg and "cfg.yaml" in msg


def test_key_twice_or_nested_too_deeply(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys silently, and recursion errors are no ValueError:
    both are one ConfigError naming the file, for run configs and search spaces alike."""
    p = tmp_path / "c.yaml"
    for text, words in (("model: {hidden_size: 8}\nmodel: {hidden_size: 16}\n", "'model' appears twice"),
                        ("model: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply")):  # fmt: skip
        p.write_text(text)
        for load in (load_config, load_search_config):
            with pytest.raises(ConfigError) as e:
                load(p)
            assert str(p) in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    assert "mapping" in error_of(tmp_path, "- a\n- b\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config") as e:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(e.value)


@pytest.mark.parametrize("bits", [1, 9, 0, 16])
def test_quant_bits_out_of_range(tmp_path: Path, bits: int) -> None:
    assert "2..8" in error_of(tmp_path, f"quant: {{mode: qat, bits: {bits}}}")


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quant_bits_in_range(tmp_path: Path, bits: int) -> None:
    assert load_config(write(tmp_path, f"quant: {{mode: qat, bits: {bits}}}")).quant.bits == bits


@pytest.mark.parametrize(
    "schedule, words",
    [
        ("[[5, 1.0]]", "rate"),
        ("[[5, 1.5]]", "rate"),
        ("[[5, 0]]", "rate"),
        ("[[5, -0.1]]", "rate"),
        ("[[-1, 0.5]]", "outside training"),
        ("[[40, 0.5]]", "outside training"),  # epochs are 0..39
        ("[[39, 0.5]]", "0..38"),  # the last epoch: no epoch left to train after the step
        ("[[5, .nan]]", "finite"),
        ("[{from: 1, to: 3, rate: .inf}]", "finite"),
        ("[{from: 30, to: 45, rate: 0.1}]", "outside training"),
        ("[[5, 0.5], [5, 0.25]]", "twice"),
        ("[[5, 0.5, 1]]", "prune.schedule[0]"),
        ("[{from: 1, to: 3}]", "prune.schedule[0]"),
        ("[{from: 1, to: 3, rate: 0.1, step: 2}]", "prune.schedule[0]"),
        ("5", "prune.schedule"),
    ],
)
def test_bad_prune_schedule(tmp_path: Path, schedule: str, words: str) -> None:
    msg = error_of(tmp_path, f"train: {{epochs: 40}}\nprune: {{schedule: {schedule}}}\n")
    assert "prune.schedule" in msg and words in msg


@pytest.mark.parametrize("step", ['["ten", 0.5]', '[10, "half"]', '{from: 1, to: 3, rate: "x"}', "[10.5, 0.5]", "[true, 0.5]"])
def test_bad_prune_step_type_is_a_config_error(tmp_path: Path, step: str) -> None:
    # load_config promises "ConfigError (one line, naming the field) on any problem"; a
    # non-numeric epoch or rate currently escapes as a bare ValueError from int()/float(),
    # and a fractional or boolean epoch is silently truncated (10.5 -> 10, true -> 1),
    # unlike every other int field, which refuses floats and booleans.
    path = write(tmp_path, f"train: {{epochs: 40}}\nprune: {{schedule: [{step}]}}\n")
    try:
        load_config(path)
    except ConfigError as e:
        assert "prune.schedule[0]" in str(e)
    except ValueError as e:
        pytest.fail(f"non-numeric prune step {step} raised a bare {type(e).__name__} ({e}), not a ConfigError")
    else:
        pytest.fail(f"non-numeric prune step {step} was accepted")


def test_study_schedule_expands_to_23_steps(tmp_path: Path) -> None:
    steps = expand_schedule(STUDY_SCHEDULE)
    assert len(steps) == 23
    assert steps[:2] == ((10, 0.5), (20, 0.25))
    assert steps[2:] == tuple((e, 0.01) for e in range(30, 51))
    cfg = load_config(
        write(
            tmp_path,
            "train: {epochs: 60}\nprune:\n  schedule: [[10, 0.5], [20, 0.25], {from: 30, to: 50, rate: 0.01}]\n",
        )
    )
    assert cfg.prune.schedule == steps
    assert "epoch 50" in error_of(tmp_path, "train: {epochs: 50}\nprune: {schedule: [{from: 30, to: 50, rate: 0.01}]}")


def test_schedule_is_sorted() -> None:
    assert expand_schedule([[20, 0.25], [10, 0.5]]) == ((10, 0.5), (20, 0.25))
    assert expand_schedule(None) == () and expand_schedule([]) == ()


def test_invalid_feature_config_is_a_config_error(tmp_path: Path) -> None:
    assert "features" in error_of(tmp_path, "features: {n_mfcc: 50, n_mels: 40}")
    assert "features" in error_of(tmp_path, "features: {hop_length: 0}")


@pytest.mark.parametrize("trim_db", [0, -10])
def test_non_positive_trim_db_is_a_config_error(tmp_path: Path, trim_db: int) -> None:
    # trim_silence keeps frames louder than -trim_db dB re the loudest, so trim_db <= 0 keeps
    # none and crashes feature extraction with an IndexError; the config must refuse it.
    try:
        load_config(write(tmp_path, f"features: {{trim_db: {trim_db}}}"))
    except ConfigError as e:
        assert "trim_db" in str(e)
    else:
        pytest.fail(f"features.trim_db={trim_db} was accepted (it makes trim_silence raise IndexError)")


@pytest.mark.parametrize(
    "text, words",
    [
        ("quant: {mode: int4}", "quant.mode"),
        ("quant: {mode: qat, scale: log}", "quant.scale"),
        ("quant: {mode: qat, act: int8}", "quant.act: int8 activations need impl: quantlstm, which is not supported"),
        ("train: {lr: 0}", "train.lr"),
        ("train: {channel_drop: 1.0}", "channel_drop"),
        ("train: {lr_schedule: step}", "train.lr_schedule"),
        ("model: {hidden_size: 0}", "model.hidden_size"),
        ("quant: {mode: qat, impl: quantlstm}", "an artifact cannot hold its per-gate quantizers"),  # issue 15: refused before training
    ],
)
def test_cross_field_validation(tmp_path: Path, text: str, words: str) -> None:
    assert words in error_of(tmp_path, text)


def test_replace_round_trips() -> None:
    cfg = load_config(REPO / "configs" / "baseline.yaml")
    assert from_dict(cfg.to_dict()) == cfg
    assert cfg.replace() == cfg

    q = cfg.replace(quant={"mode": "qat", "bits": 4}, train={"epochs": 60}, prune={"schedule": STUDY_SCHEDULE})
    assert q.quant.bits == 4 and q.quant.mode == "qat" and q.train.epochs == 60
    assert len(q.prune.schedule) == 23
    assert q.model == cfg.model and q.features == cfg.features
    assert dataclasses.replace(q.train, epochs=cfg.train.epochs) == cfg.train
    assert cfg.quant.bits == 8 and cfg.train.epochs == 40  # the original is unchanged
    assert from_dict(q.to_dict()) == q

    back = q.replace(quant={"mode": "fp32", "bits": 8}, train={"epochs": 40}, prune={"schedule": []})
    assert back == cfg


def test_replace_validates() -> None:
    cfg = Config()
    with pytest.raises(ConfigError, match="2..8"):
        cfg.replace(quant={"bits": 9})
    with pytest.raises(ConfigError, match="quant.bitz"):
        cfg.replace(quant={"bitz": 4})
    with pytest.raises(ConfigError, match="outside training"):
        cfg.replace(prune={"schedule": [[40, 0.5]]})
    with pytest.raises(ConfigError, match=r"prune\.schedule: epoch 39 .*0\.\.38"):
        cfg.replace(prune={"schedule": [[39, 0.5]]})


# --- every field of every section: an impossible value is one line naming section.field ---

# (YAML of one section, the field its error must name). Every field appears at least once
# (test_every_field_has_an_impossible_value): a new field needs its case here.
IMPOSSIBLE = [
    ("model: {hidden_size: 0}", "model.hidden_size"),
    ("model: {hidden_size: 4.5}", "model.hidden_size"),
    ("model: {hidden_size: 100000000}", "model.hidden_size"),
    ("features: {sample_rate: 16000}", "features.sample_rate"),
    ("features: {n_mfcc: 0}", "features.n_mfcc"),
    ("features: {n_mfcc: 41}", "features.n_mfcc"),
    ("features: {n_fft: 8}", "features.n_fft"),
    ("features: {n_fft: 1048576}", "features.n_fft"),
    ("features: {win_length: 800}", "features.win_length"),  # issue 10: > n_fft (400)
    ("features: {win_length: 0}", "features.win_length"),
    ("features: {hop_length: 0}", "features.hop_length"),
    ("features: {hop_length: 500}", "features.hop_length"),
    ("features: {n_mels: 0}", "features.n_mels"),
    ("features: {n_mels: 202}", "features.n_mels"),
    ("features: {f_min: 3000, f_max: 1000}", "features.f_min"),  # issue 10
    ("features: {f_min: -1}", "features.f_min"),
    ("features: {f_min: .nan}", "features.f_min"),
    ("features: {f_max: 5000}", "features.f_max"),
    ("features: {f_max: 0}", "features.f_max"),
    ("features: {f_max: .inf}", "features.f_max"),
    ("features: {top_db: 0}", "features.top_db"),
    ("features: {top_db: .nan}", "features.top_db"),
    ("features: {trim_db: -1}", "features.trim_db"),
    ("features: {trim_db: .inf}", "features.trim_db"),
    ("features: {cmvn: global}", "features.cmvn"),
    ("augment: {speeds: [1.0]}", "augment.speeds"),
    ("augment: {speeds: [3.0]}", "augment.speeds"),
    ("augment: {speeds: [.nan]}", "augment.speeds"),
    ("augment: {speeds: [0.9, 0.9]}", "augment.speeds"),
    ("augment: {tempos: [1.0]}", "augment.tempos"),
    ("augment: {tempos: [.inf]}", "augment.tempos"),
    ("augment: {noise_snr_db: 100}", "augment.noise_snr_db"),
    ("augment: {noise_snr_db: .nan}", "augment.noise_snr_db"),
    ("augment: {time_masks: -1}", "augment.time_masks"),
    ("augment: {time_mask_frames: -1}", "augment.time_mask_frames"),
    ("train: {epochs: 0}", "train.epochs"),
    ("train: {batch_size: 0}", "train.batch_size"),
    ("train: {lr: 0}", "train.lr"),
    ("train: {lr: -1e-3}", "train.lr"),
    ("train: {lr: .nan}", "train.lr"),
    ("train: {lr: .inf}", "train.lr"),
    ("train: {lr: 1.0e+38}", "train.lr"),  # Adam's step overflows float32
    ("train: {weight_decay: -0.1}", "train.weight_decay"),
    ("train: {weight_decay: .inf}", "train.weight_decay"),
    ("train: {weight_decay: 1.0e+300}", "train.weight_decay"),
    ("train: {lr_schedule: step}", "train.lr_schedule"),
    ("train: {channel_drop: 1.0}", "train.channel_drop"),
    ("train: {channel_drop: -0.1}", "train.channel_drop"),
    ("train: {frame_drop: 1.0}", "train.frame_drop"),
    ("train: {dropout: 1.0}", "train.dropout"),
    ("train: {dropout: .nan}", "train.dropout"),
    ("train: {label_smoothing: 1.0}", "train.label_smoothing"),
    ("train: {split: bogus}", "train.split"),
    ("train: {split: 'speaker:'}", "train.split"),
    ("train: {split: 'loso:a_b'}", "train.split"),
    ("train: {split: 'loso:theo', test_speaker: theo}", "train.split"),
    ("train: {test_speaker: ''}", "train.test_speaker"),
    ("train: {seed: -1}", "train.seed"),
    ("train: {seed: 4294967296}", "train.seed"),
    ("train: {threads: 0}", "train.threads"),
    ("train: {threads: 100000}", "train.threads"),
    ("train: {folds: 1}", "train.folds"),
    ("train: {epochs: 5}\nprune: {schedule: [[4, 0.5]]}", "prune.schedule"),  # issue 10: step at epochs - 1
    ("train: {epochs: 1}\nprune: {schedule: [[0, 0.5]]}", "prune.schedule"),
    ("quant: {mode: int4}", "quant.mode"),
    ("quant: {bits: 1}", "quant.bits"),
    ("quant: {scale: log}", "quant.scale"),
    ("quant: {per_channel: maybe}", "quant.per_channel"),
    ("quant: {warm_start: 1}", "quant.warm_start"),
    ("quant: {parent_epochs: 0}", "quant.parent_epochs"),
    ("quant: {parent_lr: 0}", "quant.parent_lr"),
    ("quant: {parent_lr: .inf}", "quant.parent_lr"),
    ("quant: {impl: slow}", "quant.impl"),
    ("quant: {impl: quantlstm}", "quant.impl"),  # only QAT builds a QuantLSTM
    ("quant: {bias: int8}", "quant.bias"),
    ("quant: {act: int4}", "quant.act"),
    ("augment: {chains: -1}", "augment.chains"),
    ("voices: {share: 1.0}", "voices.share"),
    ("voices: {synth: {engines: [bogus]}}", "voices.synth"),
    ("voices: {augment: {chains: 65}}", "voices.augment"),
]


def config_fields() -> set[str]:
    return {f"{name}.{f.name}" for name, cls in typing.get_type_hints(Config).items() for f in dataclasses.fields(cls)}


CASES = [(text, field) for text, field in IMPOSSIBLE if field in config_fields()]  # fields of this version only


@pytest.mark.parametrize("text, field", CASES, ids=[t for t, _ in CASES])
def test_impossible_value_names_section_and_field(tmp_path: Path, text: str, field: str) -> None:
    msg = error_of(tmp_path, text)
    section, name = field.split(".")
    # "section.field ..." (or, where one check covers two fields, "section.a and b ...").
    assert f"cfg.yaml: {field}" in msg or (f"cfg.yaml: {section}." in msg and name in msg), msg


def test_every_field_has_an_impossible_value() -> None:
    assert config_fields() == {field for _, field in CASES}


def test_issue_10_configs_say_the_allowed_range(tmp_path: Path) -> None:
    assert "features.win_length must be in 1..n_fft (400) or null, got 800" in error_of(tmp_path, "features: {win_length: 800}")
    msg = error_of(tmp_path, "features: {f_min: 3000, f_max: 1000}")
    assert "features.f_min must be in [0, f_max) = [0, 1000) Hz, got 3000" in msg
    msg = error_of(tmp_path, "train: {epochs: 6}\nprune: {schedule: [[2, 0.3], [5, 0.3]]}")
    assert "prune.schedule: epoch 5" in msg and "0..4" in msg


def test_non_finite_floats_are_refused_everywhere() -> None:
    # Directly built dataclasses (not YAML) pass through validate too, as Config.replace does.
    nan = float("nan")
    for section, change in [("features", {"f_max": nan}), ("train", {"lr": nan}), ("quant", {"parent_lr": float("inf")})]:
        with pytest.raises(ConfigError, match=f"{section}.{next(iter(change))}"):
            Config().replace(**{section: change})


# --- every configuration the search can build is valid (hypothesis) -----------------------

SEARCH = load_search_config(REPO / "configs" / "search.yaml")


class DrawnTrial:
    """An Optuna trial whose every suggestion hypothesis draws (bounds included), so that
    `define` is explored wherever its parameters can go, not only where a sampler goes."""

    def __init__(self, data: st.DataObject):
        self.data, self.params = data, {}

    def _draw(self, name: str, strategy: st.SearchStrategy):
        self.params[name] = value = self.data.draw(strategy, label=name)
        return value

    def suggest_categorical(self, name, choices):
        return self._draw(name, st.sampled_from(list(choices)))

    def suggest_int(self, name, low, high, step=1, log=False):
        return self._draw(name, st.integers(low, high).filter(lambda v: (v - low) % step == 0))

    def suggest_float(self, name, low, high, step=None, log=False):
        return self._draw(name, st.floats(low, high, allow_nan=False))

    def set_constraint(self, key, value):
        pass


def check_point(sc: SearchConfig, budget: int, params: dict, derived: dict) -> None:
    cfg = to_config(sc.base, {**params, **derived})  # raises ConfigError if invalid
    if derived["feasible"]:
        assert derived["size_bytes"] <= budget
    if cfg.prune.schedule:
        assert max(e for e, _ in cfg.prune.schedule) <= cfg.train.epochs - 2


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), budget=st.integers(smallest_size(SEARCH), 400 * 1024))
def test_every_point_of_the_shipped_space_is_a_valid_config(data, budget) -> None:
    trial = DrawnTrial(data)
    check_point(SEARCH, budget, trial.params, define(trial, SEARCH, budget))


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), epochs=st.integers(2, 45), qat_epochs=st.integers(2, 25), budget=st.integers(300, 64 * 1024))
def test_every_point_is_a_valid_config_for_other_training_lengths(data, epochs, qat_epochs, budget) -> None:
    sc = SearchConfig(SEARCH.base.replace(train={"epochs": epochs}), dataclasses.replace(SEARCH.space, qat_epochs=qat_epochs))
    trial = DrawnTrial(data)
    check_point(sc, budget, trial.params, define(trial, sc, budget))


@pytest.mark.parametrize("budget_kib", [0.5, 2, 36, 300])
def test_start_points_are_valid_configs(budget_kib) -> None:
    budget = int(budget_kib * 1024)
    for point in start_points(SEARCH):
        trial = optuna.trial.FixedTrial(point)
        check_point(SEARCH, budget, trial.params, define(trial, SEARCH, budget))


def test_one_epoch_base_with_pruning_builds_valid_configs() -> None:
    sc = SearchConfig(SEARCH.base.replace(train={"epochs": 1}), SEARCH.space)
    point = {"quant": "fp32", "n_mfcc": 13, "hop_length": 200, "n_fft": 512, "n_mels": 40, "lr": 5e-3, "prune": True, "sparsity": 0.5}
    point |= {"prune_start": 0.0, "prune_span": 0.0, "prune_steps": 1, "size_frac": 0.0}
    trial = optuna.trial.FixedTrial(point)
    check_point(sc, 36 * 1024, trial.params, define(trial, sc, 36 * 1024))


def test_yaml_exponent_without_a_dot_is_a_number(tmp_path: Path) -> None:
    # YAML 1.1 reads `1e-3` as a string; a config means the number.
    (tmp_path / "c.yaml").write_text("train: {lr: 1e-3, weight_decay: 2e-5}\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay == 2e-5
    (tmp_path / "d.yaml").write_text("train: {lr: fast}\n")
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(tmp_path / "d.yaml")


def test_backwards_prune_range_and_odd_speed_factors_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"from \(5\) must not be after to \(2\)"):
        from_dict({"prune": {"schedule": [{"from": 5, "to": 2, "rate": 0.1}]}})
    with pytest.raises(ConfigError, match="augment.speeds must be multiples of 0.01"):
        from_dict({"augment": {"speeds": [0.5001]}})
    assert from_dict({"augment": {"speeds": [0.85, 1.15]}}).augment.speeds == (0.85, 1.15)


def test_non_utf8_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_bytes("# caf\xe9\nmodel: {hidden_size: 4}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(tmp_path / "c.yaml")

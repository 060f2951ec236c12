"""Tests for search.config: strict YAML loading, field-naming errors, validation, schedules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from search.config import Config, ConfigError, expand_schedule, from_dict, load_config

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


RUN_CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml") if p.name != "search.yaml")


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=str)
def test_every_shipped_config_loads(path: str) -> None:
    assert isinstance(load_config(REPO / path), Config)


def test_search_config_loads() -> None:
    from search.space import load_search_config

    sc = load_search_config(REPO / "configs" / "search.yaml")
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


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    assert "mapping" in error_of(tmp_path, "- a\n- b\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config") as e:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(e.value)


@pytest.mark.parametrize("bits", [1, 9, 0, 16])
def test_quant_bits_out_of_range(tmp_path: Path, bits: int) -> None:
    assert "2-8" in error_of(tmp_path, f"quant: {{mode: qat, bits: {bits}}}")


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
        ("quant: {mode: qat, act: int8}", "quant.impl=quantlstm"),
        ("train: {lr: 0}", "train.lr"),
        ("train: {channel_drop: 1.0}", "channel_drop"),
        ("train: {lr_schedule: step}", "train.lr_schedule"),
        ("model: {hidden_size: 0}", "model.hidden_size"),
        ("quant: {mode: qat, impl: quantlstm}\nprune: {schedule: [[1, 0.5]]}", "quantlstm"),
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
    with pytest.raises(ConfigError, match="2-8"):
        cfg.replace(quant={"bits": 9})
    with pytest.raises(ConfigError, match="quant.bitz"):
        cfg.replace(quant={"bitz": 4})
    with pytest.raises(ConfigError, match="outside training"):
        cfg.replace(prune={"schedule": [[40, 0.5]]})

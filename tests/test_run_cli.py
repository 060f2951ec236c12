"""search.run's command line: a budget that cannot work is one line, and the default search
space ships with the package, so the command works from any directory and from a wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from search.run import main, parse_args

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("budget", ["nan", "NaN", "inf", "Infinity", "1e308", "0", "-1", "-0.0", "abc", ""])
def test_budget_that_cannot_work_is_one_line(budget, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--budget-kb", budget])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith("error: argument --budget-kb: expected a") and "(see python -m search.run --help)" in err


def test_non_finite_budget_from_the_shell_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "search.run", "--budget-kb", "nan"], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [proc.stderr.splitlines()[-1]]
    assert "--budget-kb: expected a finite number of KiB > 0" in errors[0]


def test_other_command_line_mistakes_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--budget-kb", "36", "--sampler", "grid"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument --sampler: invalid choice")


def test_positive_budgets_parse():
    assert parse_args(["--budget-kb", "36"]).budget_kb == 36.0
    assert parse_args(["--budget-kb", "0.25"]).budget_kb == 0.25


# --- the default search space ships with the package ---------------------------------------


def test_default_config_is_the_packaged_search_space():
    default = Path(parse_args([]).config)
    packaged = resources.files("search") / "search.yaml"
    assert default == Path(str(packaged)) and default.is_file()
    assert default.parent == Path(resources.files("search").joinpath("__init__.py")).parent


def test_configs_search_yaml_is_the_packaged_file():
    # One source of truth: configs/search.yaml (the copy users start from) links to it.
    user_copy = REPO / "configs" / "search.yaml"
    packaged = REPO / "search" / "search.yaml"
    assert user_copy.read_bytes() == packaged.read_bytes()
    assert user_copy.resolve() == packaged.resolve()


def test_wheel_ships_the_search_space():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "search" in setuptools["packages"]["find"]["include"]
    assert "search.yaml" in setuptools["package-data"]["search"]


def test_search_starts_from_any_directory(tmp_path, monkeypatch, capsys):
    # Outside the repository, the default space is found; this budget then fails at once,
    # before Ray (or any data) is touched, naming the packaged file.
    monkeypatch.chdir(tmp_path)
    assert main(["--budget-kb", "0.01"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "below the smallest model in the space" in err
    assert "cannot read config" not in err and str(Path(str(resources.files("search") / "search.yaml"))) in err


# --- kinds of bad input found by trying to break it (each one line, exit 2, before Ray starts) ---


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2, argv
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_fold_or_refit_split_is_not_a_search_protocol(small_data, tmp_path, capsys):
    for split in ("loso:george", "all"):
        out = tmp_path / "out"
        err = one_line_error(capsys, ["--budget-kb", "36", "--split", split, "--data-dir", str(small_data), "--out", str(out)])
        assert f"--split {split} is one part of the speaker protocol" in err
        assert not out.exists()


def test_ram_budget_below_the_smallest_library_is_refused(small_data, tmp_path, capsys):
    err = one_line_error(capsys, ["--budget-kb", "36", "--ram-kb", "0.001", "--data-dir", str(small_data), "--out", str(tmp_path)])
    assert "--ram-kb 0.001" in err and "below the RAM of the smallest" in err


def good_settings(tmp_path) -> dict:
    from fsdd.schema import dump
    from search.schema import Budget, Config, RunSettings, Space

    return dump(RunSettings(name="x", budget=Budget(1000), base=Config(), space=Space(), trials=3, time_budget_s=60.0))


def test_resume_of_settings_that_lie_is_one_line(tmp_path, capsys):
    good = good_settings(tmp_path)
    lies = {"cpus": {"cpus_per_trial": "1"}, "base": {"base": {"train": {"lr": -1}}}, "space": {"space": {"hidden_sizes": "x"}},
            "budget": {"budget": {"bytes": "1"}}, "budget_on": {"budget": {"bytes": 1, "on": "bogus"}},
            "huge": {"budget": {"bytes": 2**60}},
            "cache_dir": {"cache_dir": 5}, "slots": {"cpus": "2"}, "corpora": {"corpora": None}, "corpus": {"corpora": [{"name": "a/b"}]},
            "deep": {"base": {"model": [[[[]]]] }}, "name": {"name": "../x"}}  # fmt: skip
    for name, change in lies.items():
        d = tmp_path / name
        d.mkdir()
        (d / "search.json").write_text(json.dumps(good | change))
        err = one_line_error(capsys, ["--resume", "--name", name, "--out", str(tmp_path)])
        assert "cannot be resumed" in err and "search.json" in err, (name, err)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "search.json").write_text(json.dumps(good)[:50])
    assert "cut short" in one_line_error(capsys, ["--resume", "--name", "cut", "--out", str(tmp_path)])


def test_resume_of_lost_trials_is_one_line(tmp_path, capsys):
    d = tmp_path / "lost"
    d.mkdir()
    (d / "search.json").write_text(json.dumps(good_settings(tmp_path)))
    assert "trials" in one_line_error(capsys, ["--resume", "--name", "lost", "--out", str(tmp_path)])


def test_run_name_stays_inside_out(tmp_path, capsys):
    for name in ("../esc", str(tmp_path / "abs"), "a/b", "..", ".", ""):
        err = one_line_error(capsys, ["--budget-kb", "36", "--name", name, "--out", str(tmp_path / "o")])
        assert "--name" in err and "plain folder name" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "abs").exists() and not (tmp_path / "esc").exists()


def test_space_extremes_are_checked_as_run_configs(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("space: {hidden_sizes: [4, 5000]}\n")
    err = one_line_error(capsys, ["--budget-kb", "36", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert "space.hidden_sizes must be in 1..4096" in err and str(cfg) in err


def test_non_utf8_config_and_file_name(small_data, tmp_path, capsys):
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes("# caf\xe9\nbase: {}\n".encode("latin-1"))
    err = one_line_error(capsys, ["--budget-kb", "36", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert "not a UTF-8 text file" in err
    bad = small_data / os.fsdecode(b"5_th\xffo_3.wav")
    bad.symlink_to(next(small_data.glob("5_theo_0.wav")).resolve())
    err = one_line_error(capsys, ["--budget-kb", "36", "--data-dir", str(small_data), "--out", str(tmp_path / "o")])
    assert "not valid UTF-8" in err


@pytest.mark.slow
def test_python_dash_m_reports_errors_raised_in_the_tuner_in_one_line(small_data, tmp_path):
    # Under `python -m`, search/run.py is __main__: errors raised in search.tuner must still be caught.
    proc = subprocess.run(
        [sys.executable, "-m", "search.run", "--budget-kb", "2", "--split", "random", "--trials", "1", "--time-budget", "2m",
         "--cpus-per-trial", str((os.cpu_count() or 1) + 2), "--data-dir", str(small_data), "--out", str(tmp_path)],
        capture_output=True, text=True, check=False, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --cpus-per-trial")


def test_small_flash_budget_on_the_default_space_hints_at_the_on_chip_space():
    from search.run import flash_hint

    assert "configs/on-chip.yaml" in flash_hint(parse_args(["--budget-kb", "8", "--budget-on", "flash"]))
    assert flash_hint(parse_args(["--budget-kb", "8"])) is None
    assert flash_hint(parse_args(["--budget-kb", "36", "--budget-on", "flash"])) is None
    assert flash_hint(parse_args(["--budget-kb", "8", "--budget-on", "flash", "--config", str(REPO / "configs" / "on-chip.yaml")])) is None

"""search.run's command line: a budget that cannot work is one line, and the default search
space ships with the package, so the command works from any directory and from a wheel."""

from __future__ import annotations

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

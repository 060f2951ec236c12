"""The search space: every proposal fits the budget, conditional parameters, and the Optuna wiring."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest

from fsdd.errors import ConfigError
from search.schema import SearchConfig, Space, from_dict, load_search_config
from search.selection import pareto_front
from search.size import size_bytes
from search.space import (
    check_against_base,
    define,
    over,
    prune_schedule,
    smallest_size,
    start_points,
    to_config,
)

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)


def proposals(sc: SearchConfig, budget: int, n: int = 150, seed: int = 0):
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        derived = define(trial, sc, budget)
        yield trial, {**trial.params, **derived}


@pytest.mark.parametrize("budget_kib", [1.5, 2, 8, 36])
def test_every_feasible_proposal_fits_and_is_a_valid_config(budget_kib):
    sc = load_search_config("configs/search.yaml")
    budget = int(budget_kib * 1024)
    feasible = 0
    for trial, p in proposals(sc, budget):
        cfg = to_config(sc.base, p)
        assert from_dict(cfg.to_dict()) == cfg
        assert size_bytes(cfg) == p["size_bytes"]
        if p["feasible"]:
            feasible += 1
            assert p["size_bytes"] <= budget
        else:
            assert p["size_bytes"] > budget and p["hidden_size"] == min(sc.space.hidden_sizes)
        # Conditional parameters exist only where they apply.
        assert ("bits" in trial.params) == (p["quant"] == "qat")
        assert ("sparsity" in trial.params) == bool(p.get("prune"))
        if p.get("prune"):
            last = max(e for e, _ in cfg.prune.schedule)
            assert last <= cfg.train.epochs - 2
    assert feasible > 0.8 * 150  # repaired, not rejected


def test_infeasible_is_marked_with_an_optuna_constraint():
    sc = SearchConfig(from_dict({}), Space(quant_modes=("fp32",), n_mfcc=(8, 16), prune=False, hidden_sizes=(4, 8)))
    budget = size_bytes(to_config(sc.base, {"quant": "fp32", "lr": 0.01, "n_mfcc": 8, "hop_length": 80, "hidden_size": 4}))
    seen = set()
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        p = define(trial, sc, budget)
        study.tell(trial, [0.5, p["size_bytes"]])
        seen.add(p["feasible"])
        frozen = study.trials[-1]
        assert (frozen.constraints["size_over_budget"] <= 0) == p["feasible"]
    assert seen == {True, False}


@pytest.mark.parametrize("budget_kib", [2, 36])
def test_start_points_are_the_largest_models_that_fit(budget_kib):
    sc = load_search_config("configs/search.yaml")
    budget = int(budget_kib * 1024)
    points = start_points(sc)
    assert [(p["quant"], p.get("bits")) for p in points] == [("qat", 4), ("fp32", None), ("qat", 8)]
    study = optuna.create_study(directions=["maximize", "minimize"])
    for point in points:
        study.enqueue_trial(point)
        trial = study.ask()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Optuna warns when a fixed value is outside the space
            derived = define(trial, sc, budget)
        assert trial.params == point  # every parameter given, nothing sampled
        assert derived["feasible"] and derived["size_bytes"] <= budget
        bigger = [h for h in sc.space.hidden_sizes if h > derived["hidden_size"]]
        if bigger:  # the next hidden size would not fit: the budget is filled
            nxt = to_config(sc.base, {**trial.params, **derived, "hidden_size": min(bigger)})
            assert size_bytes(nxt) > budget


def test_prune_schedule_reaches_target():
    steps = prune_schedule(0.8, 2, 10, 3)
    assert [e for e, _ in steps] == [2, 6, 10]
    remaining = 1.0
    for _, rate in steps:
        remaining *= 1 - rate
    assert abs(remaining - 0.2) < 1e-9


def test_smallest_size_and_budget_check_inputs():
    sc = load_search_config("configs/search.yaml")
    small = smallest_size(sc)
    assert 100 < small < 1024  # the space reaches far below 1 KiB
    with pytest.raises(ConfigError, match="n_mfcc"):
        check_against_base(SearchConfig(sc.base, Space(n_mfcc=(41,))))  # more MFCCs than mel bands


def test_unknown_space_field(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("space: {hidden_size: [4]}\n")
    with pytest.raises(ConfigError, match="space.hidden_size"):
        load_search_config(f)
    f.write_text("base: {train: {epochs: 3, lrr: 1}}\n")
    with pytest.raises(ConfigError, match="train.lrr"):
        load_search_config(f)


def test_pareto_front():
    pairs = [(100, 0.5), (200, 0.4), (300, 0.7), (300, 0.6), (50, 0.5), (400, 0.7)]
    recs = [{"cost_bytes": s, "val_acc": a, "val_loss": 0.1} for s, a in pairs]
    front = pareto_front(recs)
    assert [(r["cost_bytes"], r["val_acc"]) for r in front] == [(50, 0.5), (300, 0.7)]


def test_pareto_front_breaks_accuracy_ties_by_validation_loss():
    recs = [
        {"cost_bytes": 100, "val_acc": 0.99, "val_loss": 0.08},
        {"cost_bytes": 200, "val_acc": 0.99, "val_loss": 0.03},  # same accuracy, more confident: kept
        {"cost_bytes": 300, "val_acc": 0.99, "val_loss": 0.05},  # dominated by the 200 B one
        {"cost_bytes": 150, "val_acc": 0.98, "val_loss": 0.01},  # lower accuracy: loss does not help
    ]
    front = pareto_front(recs)
    assert [r["cost_bytes"] for r in front] == [100, 200]


def test_early_stopped_and_failed_trials_do_not_reach_optuna_as_complete():
    from search.tuner import FinishedOnlyOptunaSearch

    sc = SearchConfig(from_dict({"train": {"epochs": 3}}), Space(hidden_sizes=(4, 8)))
    searcher = FinishedOnlyOptunaSearch(
        space=lambda t: define(t, sc, 8192), metric=["val_acc", "size_bytes"], mode=["max", "min"], sampler=optuna.samplers.RandomSampler(0)
    )
    for tid in ("a", "b", "c"):
        searcher.suggest(tid)
    searcher.on_trial_complete("a", {"val_acc": 0.9, "size_bytes": 900, "final": 1})
    searcher.on_trial_complete("b", {"val_acc": 0.3, "size_bytes": 900, "final": 0})  # stopped early
    searcher.on_trial_complete("c", {"val_acc": 0.3, "size_bytes": 900, "final": 0}, error=True)
    states = [t.state for t in searcher._ot_study.trials]
    S = optuna.trial.TrialState
    assert states == [S.COMPLETE, S.PRUNED, S.FAIL]
    assert searcher._ot_study.trials[0].values == [0.9, 900]


def test_dominated_trials_stop_at_rungs_only():
    from search.tuner import DominatedAtRung

    stop = DominatedAtRung(first_rung=2, k=2)
    r = lambda it, size, acc, final=0: {"training_iteration": it, "size_bytes": size, "val_acc": acc, "final": final}  # noqa: E731
    assert not stop("a", r(2, 100, 0.9)) and not stop("b", r(2, 100, 0.8))
    assert not stop("c", r(3, 200, 0.1))  # not a rung
    assert stop("d", r(2, 150, 0.5))  # two no-larger trials did better at rung 2
    assert not stop("e", r(2, 50, 0.1))  # smaller than all: never dominated
    assert not stop("f", r(2, 150, 0.5, final=1))  # a finished trial is never stopped
    assert stop.first_rung * 3 == 6 and not stop("g", r(6, 150, 0.5))  # rung 6 has no record yet


def test_a_flash_and_ram_budget_holds_for_every_proposal() -> None:
    from search.deploy import predict_flash
    from search.schema import Budget, load_search_config

    sc = load_search_config(Path(__file__).parents[1] / "configs" / "search.yaml")
    budget = Budget(8 * 1024, "flash", 2 * 1024)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(1))
    feasible = 0
    for _ in range(60):
        trial = study.ask()
        derived = define(trial, sc, budget)
        cfg = to_config(sc.base, {**trial.params, **derived})
        report = predict_flash(cfg)
        assert derived["cost_bytes"] == report.flash_bytes
        if derived["feasible"]:
            feasible += 1
            assert report.flash_bytes <= 8 * 1024 and report.ram_bytes <= 2 * 1024, trial.params
        else:
            assert trial.user_attrs == {} and over(budget, cfg) > 0
        study.tell(trial, [0.5, derived["cost_bytes"]])
    assert feasible >= 5

"""One Ray Tune trial: one configuration trained under the run's protocol (search.protocol), wrapped
for Tune. It knows nothing of Optuna; the protocol knows nothing of Ray."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from search.board import TrialBoard
from search.fit import quant_label, quiet
from search.protocol import protocol_for
from search.schema import Budget, Config, TrialRecord, write_shape
from search.size import n_params, size_bytes
from search.space import cost, over, to_config

# What a trial stopped early (or interrupted) keeps of its reports for its HParams session.
KEPT = ("val_acc", "val_loss", "size_kib", "folds")


def trial_name(experiment_tag: str, params: dict[str, Any]) -> str:
    """Short and readable, e.g. `0012-qat4-po2-h32`: the trial's number (the counter the searcher
    puts at the start of Ray's experiment tag), its quantization and its hidden size. Ray's trial
    folder gets this name (search.tuner), and the trial reads it back from there."""
    number = experiment_tag.split("_", 1)[0]
    number = f"{int(number):04d}" if number.isdigit() else number[:8]
    quant = params.get("quant", "?")
    if quant == "qat":
        quant = f"qat{params.get('bits')}-{params.get('scale')}{'-pc' if params.get('per_channel') else ''}"
    return f"{number}-{quant}-h{params.get('hidden_size')}"


def trial_dir(run_dir: str | Path, name: str) -> Path:
    """Where a trial keeps its outputs (record, weights, artifact, TensorBoard run): on the run's
    storage, so that export finds them after a crash or on a cluster with shared storage."""
    return Path(run_dir) / "trials" / name


def run_trial(
    params: dict[str, Any], *, base: Config, budget: Budget, run_dir: str, data: Any, cache_dir: str | None, threads: int
) -> None:
    """Tune function trainable. Every report carries what the searcher and the stopper read: the
    ranked `val_acc`, `cost_bytes` (what the budget counts), the artifact's `size_bytes`, `final`
    (1 only on the trial's last report) and `trained` (the trial has trained all it will). A
    configuration over budget (search.space.over) is reported and never trained."""
    quiet()
    start = time.time()
    cfg = to_config(base, params).replace(train={"threads": threads})
    size, spent = size_bytes(cfg), cost(budget, cfg)
    name = Path(tune.get_context().get_trial_dir()).name
    out = trial_dir(run_dir, name)
    out.mkdir(parents=True, exist_ok=True)
    board: TrialBoard | None = None

    def report(final: bool = False, infeasible: bool = False, trained: bool = False, **metrics: Any) -> None:
        figures = {"size_bytes": size, "size_kib": size / 1024, "cost_bytes": spent, "final": int(final), "infeasible": int(infeasible)}
        figures |= {"trained": int(trained)} | metrics
        if board is not None:
            board.last = {k: v for k, v in figures.items() if k in KEPT or k.startswith("new_speaker")}
        tune.report(figures)

    if over(budget, cfg) > 0:
        report(final=True, infeasible=True, val_acc=0.0, val_loss=0.0, sparsity=0.0)
        return
    torch.set_num_threads(threads)
    board = TrialBoard(out)
    try:
        outcome = protocol_for(cfg).train(cfg, data, cache_dir, out, board, report)
        record = TrialRecord(
            trial_id=tune.get_context().get_trial_id(),
            trial_name=name,
            params=params,
            config=cfg,
            quant=quant_label(cfg),
            size_bytes=size,
            cost_bytes=spent,
            val_acc=outcome.val_acc,
            val_loss=outcome.val_loss,
            sparsity=outcome.sparsity,
            folds=outcome.folds,
            split_hash=outcome.split_hash,
            n_params=n_params(cfg),
            trial_s=round(time.time() - start, 2),
        )
        write_shape(out / "record.json", record)  # before the final report: a trial that has it is finished, whatever Ray saved
        figures = {"val_acc": outcome.val_acc, "val_loss": outcome.val_loss, "size_kib": size / 1024, "cost_kib": spent / 1024}
        board.hparams(params, figures | outcome.figures, name)
        report(final=True, trained=True, val_acc=outcome.val_acc, val_loss=outcome.val_loss, sparsity=outcome.sparsity, **outcome.figures)
    finally:
        board.close(params, name)

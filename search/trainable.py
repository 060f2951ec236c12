"""One Ray Tune trial: one configuration trained under the run's protocol, wrapped for Tune. It knows nothing of Optuna.

Speaker protocol (the default): the trial trains its leave-one-speaker-out folds one after
another and reports after each (search.speakers), so that a trial whose first folds are
already dominated is stopped early; what it reports as `val_acc` is the accuracy pooled over
the folds done. Random protocol (the manual study's): one training run, reported every epoch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from ray import tune

from fsdd.files import write_json
from fsdd.splits import PROTOCOL_SPEAKERS
from search.board import EpochCurves, TrialBoard
from search.config import Config
from search.prune import measured_sparsity
from search.size import size_bytes
from search.space import Budget, to_config
from search.speakers import SpeakerTable, fold_configs, run_folds
from search.train import make_datamodule, quant_label, quiet, save, train


class TuneReport(pl.Callback):
    """Reports every epoch to Tune (random protocol: for early stopping). Every report carries
    every metric the searcher expects; `final` is 1 only on the trial's last report."""

    def __init__(self, size: int, cost: int, board: TrialBoard):
        self.size, self.cost, self.board = size, cost, board

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        m = trainer.callback_metrics
        net = pl_module.net
        sparsity = measured_sparsity(net) if hasattr(net.lstm, "weight_ih_l0") else 0.0
        # `trained` marks the last epoch's report: the trial has trained all its epochs, and an
        # early-stopping rung that falls there must not discard it (search.tuner.DominatedAtRung).
        trained = trainer.current_epoch + 1 >= trainer.max_epochs
        acc, loss = float(m.get("val_acc", 0.0)), float(m.get("val_loss", float("nan")))
        report(self.size, self.cost, board=self.board, val_acc=acc, val_loss=loss, sparsity=sparsity, trained=int(trained))


def report(size: int, cost: int, *, board: TrialBoard | None = None, final: bool = False, infeasible: bool = False, **metrics: Any) -> None:
    """One report to Tune, with the keys every report carries (remembered by `board`): the
    artifact's size, and `cost_bytes`, what the budget counts (search.space.Budget.cost)."""
    figures = {"size_bytes": size, "size_kib": size / 1024, "cost_bytes": cost, "final": int(final), "infeasible": int(infeasible)}
    figures |= metrics
    if board is not None:
        board.last = {k: v for k, v in figures.items() if k in ("val_acc", "val_loss", "size_kib", "folds") or k.startswith("new_speaker")}
    tune.report(figures)


def trial_name(experiment_tag: str, params: dict[str, Any]) -> str:
    """Short and readable, e.g. `0012-qat4-po2-h32`: the trial's number (the counter the
    searcher puts at the start of Ray's experiment tag), its quantization and its hidden size.
    Ray's trial folder gets this name (search.tuner), and the trial reads it back from there."""
    number = experiment_tag.split("_", 1)[0]
    number = f"{int(number):04d}" if number.isdigit() else number[:8]
    quant = params.get("quant", "?")
    if quant == "qat":
        quant = f"qat{params.get('bits')}-{params.get('scale')}{'-pc' if params.get('per_channel') else ''}"
    return f"{number}-{quant}-h{params.get('hidden_size')}"


def trial_dir(run_dir: str | Path, name: str) -> Path:
    """Where a trial keeps its outputs (record, weights, artifact, TensorBoard run): on the
    run's storage, so that export finds them after a crash or on a cluster with shared storage."""
    return Path(run_dir) / "trials" / name


def run_trial(
    params: dict[str, Any],
    *,
    base: Config,
    budget: Budget,
    run_dir: str,
    data_dir: str,
    cache_dir: str | None,
    threads: int,
) -> None:
    """Tune function trainable. A configuration over budget (Budget.over) is reported and never trained."""
    quiet()
    start = time.time()
    cfg = to_config(base, params).replace(train={"threads": threads})
    size, cost = size_bytes(cfg), budget.cost(cfg)
    trial_id = tune.get_context().get_trial_id()
    out = trial_dir(run_dir, Path(tune.get_context().get_trial_dir()).name)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg.to_dict())
    if budget.over(cfg) > 0:
        report(size, cost, final=True, infeasible=True, trained=0, val_acc=0.0, val_loss=0.0, sparsity=0.0)
        return
    torch.set_num_threads(threads)
    board = TrialBoard(out)
    try:
        record = {"trial_id": trial_id, "trial_name": out.name, "params": params, "size_bytes": size, "cost_bytes": cost}
        record.update(budget_on=budget.on, quant=quant_label(cfg))
        if cfg.train.split == PROTOCOL_SPEAKERS:
            _speaker_trial(cfg, size, record, out, board, data_dir, cache_dir, start)
        else:
            _random_trial(cfg, size, record, out, board, data_dir, cache_dir, start)
    finally:
        board.close(params)


def _speaker_trial(
    cfg: Config, size: int, record: dict, out: Path, board: TrialBoard, data_dir: str, cache_dir: str | None, start: float
) -> None:
    n_folds = len(fold_configs(cfg, data_dir))

    def on_fold(table: SpeakerTable) -> None:
        done = len(table.folds)
        fold = table.folds[-1]
        curves = {f"acc_{fold.speaker}": fold.acc, "pooled_acc": table.pooled_acc, "pooled_loss": table.pooled_loss}
        board.scalars(curves, done, "new_speaker/")
        summary = table.summary()
        final = done == n_folds
        if final:
            record.update(
                protocol=PROTOCOL_SPEAKERS,
                val_acc=table.pooled_acc,
                val_loss=table.pooled_loss,
                **summary,
                folds=[f.to_dict() for f in table.folds],
                hidden_size=cfg.model.hidden_size,
                n_mfcc=cfg.features.n_mfcc,
                seed=cfg.train.seed,
                split=cfg.train.split,
                test_speaker=cfg.train.test_speaker,
                trial_s=round(time.time() - start, 2),
            )
            # Written before the final report: a trial that has record.json is finished, whatever Ray saved.
            write_json(out / "record.json", record)
            figures = {"val_acc": table.pooled_acc, "size_kib": size / 1024, "cost_kib": record["cost_bytes"] / 1024}
            board.hparams(record["params"], figures | _numbers(summary))
        acc, loss = table.pooled_acc, table.pooled_loss
        report(
            size,
            record["cost_bytes"],
            board=board,
            final=final,
            trained=int(final),
            val_acc=acc,
            val_loss=loss,
            folds=done,
            **_numbers(summary),
        )

    run_folds(cfg, data_dir, cache_dir, on_fold, callbacks=lambda fold: [EpochCurves(board, f"train/{fold.train.split[5:]}/")])


def _random_trial(
    cfg: Config, size: int, record: dict, out: Path, board: TrialBoard, data_dir: str, cache_dir: str | None, start: float
) -> None:
    dm = make_datamodule(cfg, data_dir, cache_dir)
    net, val_acc, val_loss = train(cfg, dm, None, [EpochCurves(board), TuneReport(size, record["cost_bytes"], board)], cache_dir)
    saved = save(cfg, net, dm, out)
    saved["n_params"] = saved.pop("params")  # the record's `params` are the searched parameters
    record.update(saved)
    record.update(val_acc=val_acc, val_loss=val_loss, trial_s=round(time.time() - start, 2))
    # Written before the final report: a trial that has record.json is finished, whatever Ray saved.
    write_json(out / "record.json", record)
    board.hparams(
        record["params"], {"val_acc": val_acc, "val_loss": val_loss, "size_kib": size / 1024, "cost_kib": record["cost_bytes"] / 1024}
    )
    report(size, record["cost_bytes"], final=True, trained=1, val_acc=val_acc, val_loss=val_loss, sparsity=record["sparsity"])


def _numbers(d: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in d.items() if isinstance(v, int | float)}

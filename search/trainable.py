"""One Ray Tune trial: one training run (search.train) wrapped for Tune. It knows nothing of Optuna."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from ray import tune

from search.config import Config
from search.prune import measured_sparsity
from search.size import size_bytes
from search.space import to_config
from search.train import make_datamodule, quiet, save, train


class TuneReport(pl.Callback):
    """Reports every epoch to Tune (for early stopping and TensorBoard). Every report carries
    every metric the searcher expects; `final` is 1 only on the trial's last report."""

    def __init__(self, size: int):
        self.size = size

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        m = trainer.callback_metrics
        net = pl_module.net
        sparsity = measured_sparsity(net) if hasattr(net.lstm, "weight_ih_l0") else 0.0
        tune.report(
            {
                "val_acc": float(m.get("val_acc", 0.0)),
                "val_loss": float(m.get("val_loss", float("nan"))),
                "train_loss": float(m.get("train_loss", float("nan"))),
                "sparsity": sparsity,
                "size_bytes": self.size,
                "size_kib": self.size / 1024,
                "final": 0,
                "infeasible": 0,
            }
        )


def trial_dir(run_dir: str | Path, trial_id: str) -> Path:
    """Where a trial keeps its outputs (artifact, weights, record): on the run's storage, so
    that export finds them after a crash or on a cluster with shared storage."""
    return Path(run_dir) / "trials" / trial_id


def run_trial(
    params: dict[str, Any],
    *,
    base: Config,
    budget: int,
    run_dir: str,
    data_dir: str,
    cache_dir: str | None,
    threads: int,
) -> None:
    """Tune function trainable. A configuration over budget is reported and never trained."""
    quiet()
    cfg = to_config(base, params).replace(train={"threads": threads})
    size = size_bytes(cfg)
    trial_id = tune.get_context().get_trial_id()
    out = trial_dir(run_dir, trial_id)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    if size > budget:
        tune.report(
            {
                "val_acc": 0.0,
                "val_loss": 0.0,
                "train_loss": 0.0,
                "sparsity": 0.0,
                "size_bytes": size,
                "size_kib": size / 1024,
                "final": 1,
                "infeasible": 1,
            }
        )
        return
    torch.set_num_threads(threads)
    dm = make_datamodule(cfg, data_dir, cache_dir)
    net, val_acc, val_loss = train(cfg, dm, out, [TuneReport(size)], cache_dir)
    record = save(cfg, net, dm, out)
    record.update(val_acc=val_acc, val_loss=val_loss, trial_id=trial_id, params=params)
    # Written before the final report: a trial that has record.json is finished, whatever Ray saved.
    (out / "record.json").write_text(json.dumps(record, indent=1))
    tune.report(
        {
            "val_acc": val_acc,
            "val_loss": val_loss,
            "sparsity": record["sparsity"],
            "size_bytes": size,
            "size_kib": size / 1024,
            "final": 1,
            "infeasible": 0,
        }
    )

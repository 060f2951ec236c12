"""TensorBoard for a search: one experiment description for the whole run, and one run per trial,
named for what it is, with its curves and its HParams session."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from tensorboard.plugins.hparams import summary_v2 as hp
from torch.utils.tensorboard import SummaryWriter

Domain = tuple[float, float] | tuple[int, int] | list[Any]  # an interval (low, high) or the discrete values


def _hparam(name: str, domain: Domain) -> hp.HParam:
    if isinstance(domain, list):
        return hp.HParam(name, hp.Discrete(domain))
    lo, hi = domain
    return hp.HParam(name, hp.IntInterval(lo, hi) if isinstance(lo, int) and isinstance(hi, int) else hp.RealInterval(float(lo), float(hi)))


def write_experiment(run_dir: str | Path, domains: Mapping[str, Domain], metrics: Sequence[str]) -> None:
    """The run's one HParams experiment: every searched parameter with its domain, and every metric,
    in an event file of the run's own folder. TensorBoard takes the first experiment description it
    finds for the columns of its HParams tab (tensorflow/tensorboard#3597): one per trial, each with
    only its own parameters, made the columns depend on which trial it read first."""
    writer = SummaryWriter(str(run_dir))
    writer.file_writer.add_summary(hp.hparams_config_pb([_hparam(k, d) for k, d in domains.items()], [hp.Metric(m) for m in metrics]))
    writer.close()


class TrialBoard:
    """One event file in the trial's own folder: TensorBoard shows the folder as one run, and the
    trial as one session of the run's experiment.

    Curves are tagged `train/...` per epoch (one set per fold in the speaker protocol,
    `train/<speaker>/...`) and `new_speaker/...` per fold. A trial that starts again (a resumed
    search restarts the trials it interrupted) starts its run afresh: its earlier event files go,
    so no curve holds two trainings.
    """

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        self.writer = SummaryWriter(str(folder))
        self.last: dict[str, float] = {}  # the last figures reported: the HParams row of a trial stopped early
        self.has_hparams = False

    def scalar(self, tag: str, value: float | None, step: int) -> None:
        if value is not None and math.isfinite(value):
            self.writer.add_scalar(tag, value, step)

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        for k, v in values.items():
            self.scalar(f"{prefix}{k}", v, step)

    def hparams(self, params: Mapping[str, Any], metrics: Mapping[str, float | None], name: str = "") -> None:
        """The trial's HParams session: its parameters (those of the run's experiment) and its final
        figures, written as scalars at step 0 (where the HParams tab reads them)."""
        clean = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in params.items() if v is not None}
        self.writer.file_writer.add_summary(hp.hparams_pb(clean, trial_id=name or None))
        for k, v in metrics.items():
            self.scalar(k, v, 0)
        self.writer.flush()
        self.has_hparams = True

    def close(self, params: Mapping[str, Any] | None = None, name: str = "") -> None:
        """Close the run; a trial that ended before its HParams session (stopped early, interrupted)
        gets one from its last reported figures."""
        if params is not None and not self.has_hparams and self.last:
            self.hparams(params, self.last, name)
        self.writer.close()


class EpochCurves(pl.Callback):
    """Lightning callback: every epoch's train loss, learning rate and (if any) validation
    accuracy and loss, into a TrialBoard, under `prefix`."""

    def __init__(self, board: TrialBoard, prefix: str = "train/"):
        self.board, self.prefix = board, prefix

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        m = trainer.callback_metrics
        values = {k: float(m[k]) for k in ("val_acc", "val_loss") if k in m}
        values["train_loss"] = pl_module.epoch_train_loss
        values["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.board.scalars(values, trainer.current_epoch, self.prefix)

"""TensorBoard for a search: one run per trial, named for what it is, with its curves and its HParams row."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams


class TrialBoard:
    """One event file in the trial's own folder: TensorBoard shows the folder as one run.

    Curves are tagged `train/...` per epoch (one set per fold in the speaker protocol,
    `train/<speaker>/...`) and `new_speaker/...` or `val/...` per report. The HParams row
    is written into the same file, at the end (torch's `SummaryWriter.add_hparams` would
    open a second run for it, hence `summary.hparams` here).
    """

    def __init__(self, folder: str | Path):
        self.writer = SummaryWriter(str(folder))
        self.last: dict[str, float] = {}  # the last figures reported: the HParams row of a trial stopped early
        self.has_hparams = False

    def scalar(self, tag: str, value: float, step: int) -> None:
        if value is not None and math.isfinite(value):
            self.writer.add_scalar(tag, value, step)

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        for k, v in values.items():
            self.scalar(f"{prefix}{k}", v, step)

    def hparams(self, params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """The HParams row: every searched parameter, and the trial's final figures (which
        are also written as scalars, as TensorBoard's HParams tab reads them from there)."""
        clean = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in params.items()}
        finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        for summary in hparams(clean, finite):
            self.writer.file_writer.add_summary(summary)
        for k, v in finite.items():
            self.writer.add_scalar(k, v, 0)
        self.writer.flush()
        self.has_hparams = True

    def close(self, params: Mapping[str, Any] | None = None) -> None:
        """Close the run; a trial that ended before its HParams row (stopped early, interrupted)
        gets one from its last reported figures."""
        if params is not None and not self.has_hparams and self.last:
            self.hparams(params, self.last)
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

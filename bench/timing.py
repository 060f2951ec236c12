"""Shared helper for the benchmarks: time the training part of each epoch of search.train.fit."""

from __future__ import annotations

import statistics
import time

import pytorch_lightning as pl


class EpochTimer(pl.Callback):
    """Seconds from the start of each training epoch to the start of its validation."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.times.append(time.perf_counter() - self._t0)

    def epoch_s(self) -> float:
        """Median over epochs, the first (warm-up) one left out when there are more."""
        return statistics.median(self.times[1:] if len(self.times) > 1 else self.times)

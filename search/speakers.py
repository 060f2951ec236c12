"""The new-voices protocol: leave-one-speaker-out folds, and the per-speaker table they give.

A configuration is trained once per fold on every speaker but one (and never on the search's
test speaker), with the epoch fixed by its schedule, and scored on the held-out speaker's
clips. Pooled over the folds, every clip of the data is scored exactly once by a model that
never heard its speaker: that pooled accuracy is what the search ranks on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback

from fsdd.audio import list_wavs
from fsdd.splits import fold_kinds
from search.config import Config
from search.size import N_CLASSES


@dataclass(frozen=True)
class FoldResult:
    """One held-out speaker: clip count, correct predictions, summed cross-entropy, and the
    confusion matrix (`confusion[true][predicted]`, N_CLASSES x N_CLASSES clip counts)."""

    speaker: str
    n: int
    correct: int
    loss_sum: float
    confusion: tuple[tuple[int, ...], ...]

    @property
    def acc(self) -> float:
        return self.correct / self.n

    @classmethod
    def from_logits(cls, speaker: str, z: torch.Tensor, y: torch.Tensor) -> FoldResult:
        pred = z.argmax(1)
        conf = torch.zeros(N_CLASSES, N_CLASSES, dtype=torch.long)
        conf.index_put_((y, pred), torch.ones_like(y), accumulate=True)
        return cls(
            speaker=speaker,
            n=len(y),
            correct=int((pred == y).sum()),
            loss_sum=float(F.cross_entropy(z, y, reduction="sum")),
            confusion=tuple(tuple(int(v) for v in row) for row in conf.tolist()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"speaker": self.speaker, "n": self.n, "correct": self.correct, "loss_sum": self.loss_sum, "confusion": self.confusion}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FoldResult:
        return cls(d["speaker"], d["n"], d["correct"], d["loss_sum"], tuple(tuple(r) for r in d["confusion"]))


@dataclass(frozen=True)
class SpeakerTable:
    """The folds run so far. `pooled_acc` weighs each speaker by its clip count (every clip
    counts once); `mean_acc` weighs speakers equally; `worst` is the lowest speaker."""

    folds: tuple[FoldResult, ...]

    @property
    def n(self) -> int:
        return sum(f.n for f in self.folds)

    @property
    def pooled_acc(self) -> float:
        return sum(f.correct for f in self.folds) / self.n

    @property
    def pooled_loss(self) -> float:
        return sum(f.loss_sum for f in self.folds) / self.n

    @property
    def mean_acc(self) -> float:
        return sum(f.acc for f in self.folds) / len(self.folds)

    @property
    def worst(self) -> FoldResult:
        return min(self.folds, key=lambda f: f.acc)

    def summary(self) -> dict[str, Any]:
        """Flat figures for reports and CSV columns: pooled, mean, worst, and `acc_<speaker>`."""
        return {
            "new_speaker_acc": self.pooled_acc,
            "new_speaker_loss": self.pooled_loss,
            "new_speaker_mean": self.mean_acc,
            "new_speaker_worst": self.worst.acc,
            "worst_speaker": self.worst.speaker,
            **{f"acc_{f.speaker}": f.acc for f in self.folds},
        }

    def format(self, title: str = "") -> str:
        """The per-speaker table as Markdown."""
        lines = [title] if title else []
        lines += ["| held-out speaker | clips | accuracy |", "|---|---|---|"]
        lines += [f"| {f.speaker} | {f.n} | {f.acc:.3f} |" for f in self.folds]
        lines.append(f"| **mean** (worst: {self.worst.speaker} {self.worst.acc:.3f}) | {self.n} | **{self.mean_acc:.3f}** |")
        lines.append(f"| pooled (every clip once) | {self.n} | {self.pooled_acc:.4f} |")
        return "\n".join(lines)


def fold_configs(cfg: Config, data_dir: str | Path) -> list[Config]:
    """One config per fold: `cfg` with its split set to `loso:NAME`, in speaker-name order.
    DataError if the data has fewer than two speakers (besides the test speaker)."""
    names = [f.name for f in list_wavs(data_dir)]
    return [cfg.replace(train={"split": kind}) for kind in fold_kinds(names, cfg.train.test_speaker)]


def run_fold(
    cfg: Config,
    data_dir: str | Path,
    cache_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    log_dir: str | Path | None = None,
) -> FoldResult:
    """Train `cfg` (a `loso:NAME` split) and score the deployed model on NAME's clips."""
    from search.train import deployed, eval_batch, logits, make_datamodule, train

    dm = make_datamodule(cfg, data_dir, cache_dir)
    net, _, _ = train(cfg, dm, log_dir, callbacks, cache_dir)
    z, y = logits(deployed(cfg, net), dm, "test", eval_batch(cfg))
    return FoldResult.from_logits(cfg.train.split.split(":", 1)[1], z, y)


def run_folds(
    cfg: Config,
    data_dir: str | Path,
    cache_dir: str | Path | None = None,
    on_fold: Callable[[SpeakerTable], None] | None = None,
    callbacks: Callable[[Config], Sequence[Callback]] | None = None,
) -> SpeakerTable:
    """Every fold of `cfg` in turn; `on_fold(table so far)` after each (the search reports there,
    and may stop the trial). `callbacks(fold config)` gives each fold's training callbacks."""
    done: list[FoldResult] = []
    for fold in fold_configs(cfg, data_dir):
        done.append(run_fold(fold, data_dir, cache_dir, callbacks(fold) if callbacks else ()))
        if on_fold is not None:
            on_fold(SpeakerTable(tuple(done)))
    return SpeakerTable(tuple(done))

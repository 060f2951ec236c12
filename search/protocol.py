"""What a configuration is trained and ranked on: one object per protocol, which everything else asks.

- `SingleSplit` (a split such as `random`, the manual study's): one training run, reported every
  epoch; ranked on validation accuracy; the trial's own model is deployed and tested once.
- `SpeakerFolds` (`speakers`, the default): held-out-speaker folds, trained one after another and
  reported after each; ranked on the accuracy pooled over the held-out speakers (every real clip
  scored once by a model that never heard its speaker); the deployed model is retrained on every
  speaker (or all but a test speaker, tested once) and carries the fold figures as an estimate.

A protocol knows how a trial trains and reports, its rungs, the ranked metric and its label, how
a front member is made deployable, and the columns and marks the reports carry. It knows nothing
of Ray or Optuna: the trainable hands it a `report` function.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from fsdd.corpora import as_corpora, list_clips
from fsdd.errors import ArtifactError, ConfigError
from fsdd.schema import SPEAKERS, dump, load
from fsdd.splits import clip_speaker, fold_kinds, make_split, speakers_of
from search import artifact
from search.board import EpochCurves, TrialBoard
from search.fit import deployed, eval_batch, load_net, logits, make_datamodule, quant_label, save, test, train
from search.prune import measured_sparsity
from search.schema import N_CLASSES, Config, FoldResult, Refit, TrialRecord, read_json_shape, write_shape
from search.size import n_params, size_bytes, size_bytes_study
from search.verify import verify

Report = Callable[..., None]  # report(**figures, trained=bool): one intermediate report of a trial


@dataclass(frozen=True)
class Outcome:
    """What training one configuration under a protocol gave: the ranked figures and what backs them."""

    val_acc: float
    val_loss: float
    sparsity: float = 0.0
    folds: tuple[FoldResult, ...] = ()
    split_hash: str | None = None
    figures: dict[str, float] = field(default_factory=dict)  # the protocol's own columns (summary)


def fold_result(speaker: str, z: torch.Tensor, y: torch.Tensor) -> FoldResult:
    """A held-out speaker's figures from its clips' logits (N, N_CLASSES) and true classes (N,)."""
    pred = z.argmax(1)
    conf = torch.zeros(N_CLASSES, N_CLASSES, dtype=torch.long)
    conf.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    return FoldResult(
        speaker=speaker,
        n=len(y),
        correct=int((pred == y).sum()),
        loss_sum=float(F.cross_entropy(z, y, reduction="sum")),
        confusion=tuple(tuple(int(v) for v in row) for row in conf.tolist()),
    )


@dataclass(frozen=True)
class SpeakerTable:
    """The folds' held-out speakers so far. `pooled_acc` weighs each speaker by its clip count (every
    clip counts once); `mean_acc` weighs speakers equally; `worst` is the lowest speaker; with
    several corpora, `corpus_means` gives each corpus's mean over its speakers and `macro_acc`
    their mean (every corpus counts the same)."""

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

    @property
    def corpus_means(self) -> dict[str, float]:
        by: dict[str, list[float]] = {}
        for f in self.folds:
            corpus = f.speaker.rpartition("/")[0]
            if corpus:
                by.setdefault(corpus, []).append(f.acc)
        return {c: sum(a) / len(a) for c, a in by.items()}

    @property
    def macro_acc(self) -> float:
        means = self.corpus_means
        return sum(means.values()) / len(means) if means else self.mean_acc

    def summary(self) -> dict[str, Any]:
        """Flat figures for reports and CSV columns: pooled, mean, worst, `acc_<speaker>`, and with
        several corpora `acc_corpus_<corpus>` and `new_speaker_macro`."""
        out = {
            "new_speaker_acc": self.pooled_acc,
            "new_speaker_loss": self.pooled_loss,
            "new_speaker_mean": self.mean_acc,
            "new_speaker_worst": self.worst.acc,
            "worst_speaker": self.worst.speaker,
            **{f"acc_{f.speaker}": f.acc for f in self.folds},
        }
        if self.corpus_means:
            out |= {f"acc_corpus_{c}": a for c, a in self.corpus_means.items()} | {"new_speaker_macro": self.macro_acc}
        return out

    def format(self, title: str = "") -> str:
        """The per-speaker table as Markdown (and each corpus's mean, with several)."""
        lines = [title] if title else []
        lines += ["| held-out speaker | clips | accuracy |", "|---|---|---|"]
        lines += [f"| {f.speaker} | {f.n} | {f.acc:.3f} |" for f in self.folds]
        lines += [f"| corpus {c} (mean of its speakers) | | {a:.3f} |" for c, a in self.corpus_means.items()]
        if self.corpus_means:
            lines.append(f"| macro mean over corpora | | {self.macro_acc:.3f} |")
        lines.append(f"| **mean** (worst: {self.worst.speaker} {self.worst.acc:.3f}) | {self.n} | **{self.mean_acc:.3f}** |")
        lines.append(f"| pooled (every clip once) | {self.n} | {self.pooled_acc:.4f} |")
        return "\n".join(lines)


class EpochReport(pl.Callback):
    """Reports every epoch (a single split: for early stopping), with what the searcher ranks.
    `trained` marks the last epoch: a rung that falls there must not discard the trial."""

    def __init__(self, report: Report):
        self.report = report

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        m = trainer.callback_metrics
        trained = trainer.current_epoch + 1 >= trainer.max_epochs
        acc, loss = float(m.get("val_acc", 0.0)), float(m.get("val_loss", float("nan")))
        self.report(val_acc=acc, val_loss=loss, sparsity=measured_sparsity(pl_module.net), trained=trained)


class Protocol:
    """The strategy a run trains and ranks by (module docstring). Subclasses fill in each part."""

    name: str  # the run's train.split
    title: str  # what a trial trains on, in a sentence
    label: str  # the ranked accuracy, in status lines and tables
    axis: str  # the ranked accuracy, on a figure's axis
    compare_with_study: bool  # the manual study's points belong on its figure (same split)

    def rungs(self, base: Config) -> tuple[int, int]:
        """Early stopping's first rung (an epoch or a fold) and the factor between rungs."""
        raise NotImplementedError

    def check(self, cfg: Config, data: Any) -> None:
        """DataError in one line if `data` cannot serve this protocol (before any work)."""
        raise NotImplementedError

    def run(self, cfg: Config, data: Any, out: Path, cache_dir: str | None) -> tuple[dict[str, Any], str]:
        """One configuration, outside a search (search.train): its result record, and a text to print first."""
        raise NotImplementedError

    def metrics(self, data: Any) -> list[str]:
        """The figures a trial reports besides the ranked pair and sizes (its HParams metrics)."""
        raise NotImplementedError

    def train(self, cfg: Config, data: Any, cache_dir: str | None, out: Path, board: TrialBoard, report: Report) -> Outcome:
        """Train `cfg` (writing what the front needs into `out`), reporting as it goes."""
        raise NotImplementedError

    def deployable(self, record: TrialRecord, trial_dir: Path, refit_dir: Path, data: Any, cache_dir: str | None) -> tuple[Path, Refit]:
        """The folder holding the member's model.safetensors and predictions.json, and its Refit."""
        raise NotImplementedError

    def columns(self, record: TrialRecord, refit: Refit) -> dict[str, Any]:
        """The member's protocol columns in pareto.csv and pareto.json."""
        raise NotImplementedError

    def marks(self, rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, list[float | None]]]:
        """Extra marks per front member on pareto.png: (label, marker, colour, value per row)."""
        raise NotImplementedError

    def describe(self, row: dict[str, Any]) -> str:
        """One line of the front's table (after its size and ranked accuracy)."""
        raise NotImplementedError

    def winner_lines(self, winner: dict[str, Any]) -> list[str]:
        """What the summary says of the winner, after its size."""
        raise NotImplementedError


def protocol_for(cfg: Config) -> Protocol:
    """The protocol of a run or trial config (its train.split)."""
    return SpeakerFolds() if cfg.train.split == SPEAKERS else SingleSplit(cfg.train.split)


def _verify(folder: Path, data: Any) -> dict[str, Any]:
    return verify(folder / "model.safetensors", as_corpora(data), predictions=folder / "predictions.json")


class SingleSplit(Protocol):
    label = "val"
    title = "one split, ranked on its validation set"
    axis = "accuracy"
    compare_with_study = True

    def __init__(self, split: str):
        self.name = split

    def rungs(self, base: Config) -> tuple[int, int]:
        return (max(2, base.train.epochs // 6), 3)  # epochs r, 3r, 9r ...: r a sixth of the base's epochs

    def check(self, cfg: Config, data: Any) -> None:
        clips = list_clips(as_corpora(data))
        make_split(list(clips.keys), cfg.train.split, cfg.train.seed, test_speaker=cfg.train.test_speaker, train_only=clips.train_only)

    def train(self, cfg: Config, data: Any, cache_dir: str | None, out: Path, board: TrialBoard, report: Report) -> Outcome:
        dm = make_datamodule(cfg, data, cache_dir)
        net, val_acc, val_loss = train(cfg, dm, None, [EpochCurves(board), EpochReport(report)], cache_dir)
        save(cfg, net, dm, out)
        return Outcome(val_acc, val_loss, measured_sparsity(net), split_hash=dm.split.hash)

    def deployable(self, record: TrialRecord, trial_dir: Path, refit_dir: Path, data: Any, cache_dir: str | None) -> tuple[Path, Refit]:
        cfg = record.config
        dm = make_datamodule(cfg, data, cache_dir)
        test_acc = test(cfg, load_net(cfg, trial_dir / "weights.safetensors"), dm, trial_dir)
        check = _verify(trial_dir, data)
        return trial_dir, Refit(cfg, test_acc, check["test_acc"], check["agree"], "test")

    def columns(self, record: TrialRecord, refit: Refit) -> dict[str, Any]:
        cfg = record.config
        return {
            "val_acc": record.val_acc,
            "val_loss": record.val_loss,
            "test_acc": refit.test_acc,
            "verify_test_acc": refit.verify_acc,
            "size_bytes_study": size_bytes_study(cfg),
            "seed": cfg.train.seed,
            "split": cfg.train.split,
            "split_hash": record.split_hash,
        }

    def run(self, cfg: Config, data: Any, out: Path, cache_dir: str | None) -> tuple[dict[str, Any], str]:
        dm = make_datamodule(cfg, data, cache_dir)  # bad data or split refused before anything is made
        net, val_acc, val_loss = train(cfg, dm, out, (), cache_dir)
        path = save(cfg, net, dm, out)
        result = {
            "val_acc": val_acc,
            "val_loss": val_loss,
            "test_acc": test(cfg, net, dm, out),
            "n_params": n_params(cfg),
            "hidden_size": cfg.model.hidden_size,
            "n_mfcc": cfg.features.n_mfcc,
            "split": cfg.train.split,
            "split_hash": dm.split.hash,
            "seed": cfg.train.seed,
            "epochs": cfg.train.epochs,
            "size_bytes": size_bytes(cfg),
            "size_bytes_study": size_bytes_study(cfg),
            "sparsity": measured_sparsity(net),
            "quant": quant_label(cfg),
            "artifact": str(path),
        }
        return result, ""

    def metrics(self, data: Any) -> list[str]:
        return []

    def marks(self, rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, list[float | None]]]:
        return [("front, test accuracy", "o", "tab:red", [r["test_acc"] for r in rows])]

    def describe(self, row: dict[str, Any]) -> str:
        return f"test {row['test_acc']:7.4f} verify {row['verify_test_acc']:7.4f}  {_model(row)} sparsity {row['sparsity']:.0%}"

    def winner_lines(self, winner: dict[str, Any]) -> list[str]:
        return [f"  val {winner['val_acc']:.4f}, test {winner['test_acc']:.4f} (the test split, touched once)"]


class SpeakerFolds(Protocol):
    name = SPEAKERS
    title = "held-out-speaker folds, ranked on the accuracy pooled over their held-out speakers"
    label = "new-speaker acc"
    axis = "accuracy on speakers never heard in training"
    compare_with_study = False

    def rungs(self, base: Config) -> tuple[int, int]:
        return (1, 2)  # after folds 1, 2, 4

    def folds(self, cfg: Config, data: Any) -> list[Config]:
        """One config per fold, in order (fsdd.splits.fold_kinds). DataError if the data has fewer
        than two real speakers besides the test speaker."""
        clips = list_clips(as_corpora(data))
        t = cfg.train
        kinds = fold_kinds(list(clips.keys), t.test_speaker, t.folds, t.seed, clips.train_only)
        return [cfg.replace(train={"split": kind}) for kind in kinds]

    def check(self, cfg: Config, data: Any) -> None:
        self.folds(cfg, data)

    def run_folds(
        self,
        cfg: Config,
        data: Any,
        cache_dir: str | None,
        on_fold: Callable[[SpeakerTable], None] | None = None,
        callbacks: Callable[[Config], Sequence[pl.Callback]] | None = None,
    ) -> SpeakerTable:
        """Every fold of `cfg` in turn: train on the others, score the deployed model on the held-out
        speakers' clips (one FoldResult per held-out speaker); `on_fold(table so far)` after each."""
        done: list[FoldResult] = []
        for fold in self.folds(cfg, data):
            dm = make_datamodule(fold, data, cache_dir)
            net, _, _ = train(fold, dm, None, callbacks(fold) if callbacks else (), cache_dir)
            z, y = logits(deployed(fold, net), dm, "test", eval_batch(fold))
            owners = [clip_speaker(dm.names[i]) for i in dm.split.test]
            for speaker in sorted(set(owners)):
                mask = torch.tensor([o == speaker for o in owners])
                done.append(fold_result(speaker, z[mask], y[mask]))
            if on_fold is not None:
                on_fold(SpeakerTable(tuple(done)))
        return SpeakerTable(tuple(done))

    def train(self, cfg: Config, data: Any, cache_dir: str | None, out: Path, board: TrialBoard, report: Report) -> Outcome:
        n_folds = len(self.folds(cfg, data))
        step = [0]

        def on_fold(table: SpeakerTable) -> None:
            step[0] += 1
            curves = {f"acc_{f.speaker}": f.acc for f in table.folds} | {"pooled_acc": table.pooled_acc, "pooled_loss": table.pooled_loss}
            board.scalars(curves, step[0], "new_speaker/")
            if step[0] < n_folds:  # the last fold's figures are the trial's final report (the trainable's)
                report(val_acc=table.pooled_acc, val_loss=table.pooled_loss, folds=step[0], trained=False, **_numbers(table.summary()))

        def curves(fold: Config) -> list[pl.Callback]:
            return [EpochCurves(board, f"train/{fold.train.split.partition(':')[2]}/")]

        table = self.run_folds(cfg, data, cache_dir, on_fold, curves)
        return Outcome(table.pooled_acc, table.pooled_loss, folds=table.folds, figures=_numbers(table.summary()) | {"folds": n_folds})

    def refit_config(self, cfg: Config) -> Config:
        """The deployable model's config: trained on every speaker (`all`), or, with a test speaker,
        on every other one and tested on it (`loso:T`)."""
        t = cfg.train.test_speaker
        return cfg.replace(train={"split": f"loso:{t}" if t else "all", "test_speaker": None})

    def deployable(self, record: TrialRecord, trial_dir: Path, refit_dir: Path, data: Any, cache_dir: str | None) -> tuple[Path, Refit]:
        """Retrain the member on every speaker (refit_config) into `refit_dir`, with the fold figures
        in its artifact as an estimate, and check it with the numpy reference. An earlier refit of
        the same configuration there (refit.json) is reused: a second export takes seconds."""
        cfg = self.refit_config(record.config)
        done = refit_dir / "refit.json"
        if done.is_file():
            try:  # a cache: one that cannot be read (cut short by a killed export) is made again
                earlier = read_json_shape(Refit, done, "refit")
                artifact.read(refit_dir / "model.safetensors")
            except (ConfigError, ArtifactError):
                earlier = None
            if earlier is not None and earlier.config == cfg:
                return refit_dir, earlier
        refit_dir.mkdir(parents=True, exist_ok=True)
        dm = make_datamodule(cfg, data, cache_dir)
        net, _, _ = train(cfg, dm, None, (), cache_dir)
        save(cfg, net, dm, refit_dir, estimate=self.estimate(record))
        test_acc = test(cfg, net, dm, refit_dir)
        check = _verify(refit_dir, data)
        refit = Refit(
            cfg, test_acc, check["test_acc"] if dm.split.test else check["train_acc"], check["agree"], "test" if dm.split.test else "train"
        )
        write_shape(done, refit)
        return refit_dir, refit

    def estimate(self, record: TrialRecord) -> dict[str, Any]:
        """A member's fold figures, as stored in its artifact: an estimate of new-speaker accuracy."""
        return SpeakerTable(record.folds).summary() | {"source": "held-out-speaker folds of the search (selected on them: optimistic)"}

    def columns(self, record: TrialRecord, refit: Refit) -> dict[str, Any]:
        cfg = record.config
        return {
            "val_acc": record.val_acc,  # what the search ranks: accuracy pooled over the folds' held-out speakers
            "val_loss": record.val_loss,
            **SpeakerTable(record.folds).summary(),
            "test_speaker": cfg.train.test_speaker,
            "test_acc": refit.test_acc,  # on the test speaker, once (None without --test-speaker)
            # The numpy reference's accuracy on what the refit was scored on: its test speaker, or,
            # for a refit on every speaker (no test set), its own training clips (not new voices).
            "verify_test_acc": refit.verify_acc if refit.scored == "test" else None,
            "verify_train_acc": refit.verify_acc if refit.scored == "train" else None,
            "refit_split": refit.config.train.split,
            "folds": dump(record.folds),
        }

    def run(self, cfg: Config, data: Any, out: Path, cache_dir: str | None) -> tuple[dict[str, Any], str]:
        table = self.run_folds(cfg, data, cache_dir)
        result = {
            "protocol": SPEAKERS,
            **table.summary(),
            "size_bytes": size_bytes(cfg),
            "quant": quant_label(cfg),
            "hidden_size": cfg.model.hidden_size,
            "seed": cfg.train.seed,
            "test_speaker": cfg.train.test_speaker,
            "folds": dump(table.folds),
        }
        return result, table.format(f"{quant_label(cfg)} h{cfg.model.hidden_size}, {size_bytes(cfg)} B, seed {cfg.train.seed}")

    def metrics(self, data: Any) -> list[str]:
        clips = list_clips(as_corpora(data))
        speakers = speakers_of(list(clips.keys), clips.train_only)
        corpora = sorted({s.rpartition("/")[0] for s in speakers} - {""})
        names = ["new_speaker_acc", "new_speaker_loss", "new_speaker_mean", "new_speaker_worst", "folds"]
        return names + [f"acc_{s}" for s in speakers] + [f"acc_corpus_{c}" for c in corpora] + (["new_speaker_macro"] if corpora else [])

    def marks(self, rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, list[float | None]]]:
        marks = [
            ("front: mean over speakers", "o", "tab:purple", [r["new_speaker_mean"] for r in rows]),
            ("front: worst speaker", "v", "tab:orange", [r["new_speaker_worst"] for r in rows]),
        ]
        if rows and rows[0].get("test_speaker"):
            marks.append((f"front: test speaker {rows[0]['test_speaker']}", "o", "tab:red", [r.get("test_acc") for r in rows]))
        return marks

    def describe(self, row: dict[str, Any]) -> str:
        test = f" test {row['test_acc']:.4f}" if row.get("test_acc") is not None else ""
        return (
            f"mean {row['new_speaker_mean']:7.4f} worst {row['new_speaker_worst']:7.4f}{test}  "
            f"{_model(row)} cmvn {row['cmvn']} (worst: {row['worst_speaker']})"
        )

    def winner_lines(self, winner: dict[str, Any]) -> list[str]:
        table = SpeakerTable(tuple(load(FoldResult, f) for f in winner["folds"]))
        unbiased = (
            f"on the test speaker {winner['test_speaker']}, never seen by the search: {winner['test_acc']:.4f}."
            if winner.get("test_acc") is not None
            else "`--test-speaker NAME` keeps one speaker out of the whole search for an unbiased figure."
        )
        trained_on = "every speaker" if winner["refit_split"] == "all" else "every speaker but the test speaker"
        return [
            "  each speaker held out of training in turn:",
            table.format(),
            "  These fold figures are the search's own ranking signal, so the winner's are optimistic; " + unbiased,
            f"  the artifact was retrained on {trained_on}",
        ]


def _model(row: dict[str, Any]) -> str:
    return f"{row['quant']} h{row['hidden_size']} mfcc{row['n_mfcc']}"


def _numbers(d: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in d.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def run_one(cfg: Config, data: Any, out: Path, cache_dir: str | None = None) -> tuple[dict[str, Any], str]:
    """`python -m search.train`: `cfg` under its protocol (Protocol.run), outputs in `out`; the result
    record (also result.json) with its wall time, and a text to print before it."""
    start = time.time()
    result, text = protocol_for(cfg).run(cfg, data, out, cache_dir)
    return result | {"wall_s": round(time.time() - start, 1)}, text

"""One training run: `python -m search.train --config configs/baseline.yaml`.

Trains (and prunes / quantizes) one configuration, selects the epoch on validation,
measures test accuracy once, exports the artifact and prints a JSON line last.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, LearningRateMonitor
from pytorch_lightning.loggers import TensorBoardLogger
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from fsdd.datamodule import Augment, FSDDDataModule
from fsdd.download import default_cache_dir, resolve_data_dir
from fsdd.errors import DataError
from fsdd.files import atomic_write, write_json
from fsdd.splits import PROTOCOL_SPEAKERS
from search import artifact
from search.config import Config, ConfigError, QuantConfig, load_config
from search.model import LitClassifier, LSTMClassifier, PlainClassifier, build_model
from search.prune import effective_state_dict, measured_sparsity, pruning_callback
from search.quant import dynamic_int8
from search.selection import selection_key
from search.size import n_params, size_bytes, size_bytes_study, sparsity
from search.speakers import SpeakerTable, run_folds


class BestState(Callback):
    """Keeps, in memory, the weights of the best epoch (`selection_key`), counting only
    epochs after the last pruning step (earlier ones have fewer zeros than the artifact).
    Without validation data (`loso:NAME`, `all`) the best epoch is the last one: the schedule
    fixes it, and no held-out speaker has a say. In memory rather than ModelCheckpoint: no
    pickle files, and no mid-schedule checkpoints."""

    def __init__(self, first_epoch: int = 0, last: bool = False):
        self.first_epoch, self.last, self.key, self.epoch, self.state = first_epoch, last, (-1.0, -math.inf), -1, None

    @property
    def val_acc(self) -> float:
        return self.key[0]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        m = trainer.callback_metrics
        key = selection_key(float(m.get("val_acc", -1.0)), float(m.get("val_loss", math.inf)))
        if self.last:
            key = (float(trainer.current_epoch), 0.0)
        if trainer.current_epoch >= self.first_epoch and key > self.key:
            self.key, self.epoch = key, trainer.current_epoch
            self.state = effective_state_dict(pl_module.net)


def make_datamodule(cfg: Config, data_dir: str | Path, cache_dir: str | Path | None = None) -> FSDDDataModule:
    t = cfg.train
    dm = FSDDDataModule(
        data_dir, cfg.features, t.split, t.seed, t.batch_size, t.channel_drop, t.frame_drop, cache_dir, t.test_speaker, cfg.augment
    )
    dm.setup()
    return dm


def fit(
    cfg: Config,
    dm: FSDDDataModule,
    log_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    init: dict[str, torch.Tensor] | None = None,
) -> LSTMClassifier:
    """Train `cfg` (from `init` weights if given); return the validation-selected network."""
    pl.seed_everything(cfg.train.seed, verbose=False)
    torch.set_num_threads(max(1, cfg.train.threads))
    net = build_model(cfg)
    if init is not None:
        warm_start(net, init)
    lit = LitClassifier(cfg, net)
    prune = pruning_callback(net, cfg.prune)
    last_prune = max((e for e, _ in cfg.prune.schedule), default=-1)
    best = BestState(first_epoch=last_prune + 1, last=not dm.has_val)
    cbs: list[Callback] = [best, *([prune] if prune else []), *callbacks]
    logger: Any = False
    if log_dir is not None:
        logger = TensorBoardLogger(str(log_dir), name="", version="", default_hp_metric=False)
        cbs.append(LearningRateMonitor("epoch"))
    trainer = pl.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=cbs,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=None if dm.has_val else 0,
        log_every_n_steps=1,
    )
    trainer.fit(lit, datamodule=dm)
    if best.state is None:
        raise RuntimeError("no validation epoch after the last pruning step")
    # Brevitas QuantLSTM registers some activation-scale state lazily, after a snapshot may be taken.
    net.load_state_dict(best.state, strict=cfg.quant.impl != "quantlstm")
    return net.eval()


def warm_start(net: LSTMClassifier, state: dict[str, torch.Tensor]) -> None:
    """Load a float parent's weights (nn.LSTM key names) into a QAT network."""
    lstm_state = {k[len("lstm.") :]: v for k, v in state.items() if k.startswith("lstm.")}
    # Brevitas QuantLSTM remaps nn.LSTM keys itself (gate split, summed biases); give it only
    # the LSTM's own dict, since its remapper matches any key containing "_l0".
    missing, unexpected = net.lstm.load_state_dict(lstm_state, strict=False)
    if unexpected or any("weight" in k and "quant" not in k for k in missing):
        raise RuntimeError(f"warm start does not fit: missing {missing}, unexpected {unexpected}")
    net.fc.load_state_dict({k[len("fc.") :]: v for k, v in state.items() if k.startswith("fc.")})


def parent_config(cfg: Config) -> Config:
    """The float32, unpruned network a QAT child warm-starts from."""
    train = {"epochs": cfg.quant.parent_epochs or cfg.train.epochs, "lr": cfg.quant.parent_lr or cfg.train.lr}
    # Only what determines the parent: every child of one parent maps to the same config (and cache key).
    return cfg.replace(quant=dataclasses.asdict(QuantConfig()), prune={"schedule": []}, train=train)


def float_parent(cfg: Config, dm: FSDDDataModule, cache_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Weights of the float parent of `cfg`, trained once and cached on disk (safetensors).

    The key covers everything that determines the parent: its config (hidden size, features,
    training settings, seed), the split and the data. A file lock makes concurrent children
    of one parent wait for the first to train it instead of training it again. A cached file
    that cannot be read or fails its check (_cached_parent) is retrained under the same lock.
    """
    pcfg = parent_config(cfg)
    blob = json.dumps({"cfg": pcfg.to_dict(), "split": dm.split.hash, "data": dm.data_key}, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    folder = Path(cache_dir or default_cache_dir()) / "parents"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"h{cfg.model.hidden_size}-{key}.safetensors"
    with open(folder / f"{path.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            state = _cached_parent(path, pcfg)
            if state is not None:
                return state
        net = fit(pcfg, dm)  # a missing or unusable parent is (re)trained and replaces the file
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, tmp))
        return state


def _cached_parent(path: Path, pcfg: Config) -> dict[str, torch.Tensor] | None:
    """The float parent cached at `path`, or None, after a one-line warning on stderr naming
    the file, if it cannot be read or does not hold finite weights of `pcfg`'s network (the
    same tensor names, shapes and dtypes)."""
    from safetensors import SafetensorError

    want = build_model(pcfg).state_dict()
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        problem = f"unreadable: {(str(e) or type(e).__name__).splitlines()[0]}"
    else:
        missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
        wrong = [k for k in want if k in state and (state[k].shape, state[k].dtype) != (want[k].shape, want[k].dtype)]
        if missing or extra:
            problem = f"tensors missing: {missing or 'none'}, unexpected: {extra or 'none'}"
        elif wrong:
            k = wrong[0]
            problem = f"{k} is {state[k].dtype} {tuple(state[k].shape)}, expected {want[k].dtype} {tuple(want[k].shape)}"
        elif not all(torch.isfinite(v).all() for v in state.values()):
            problem = "non-finite weights"
        else:
            return state
    print(f"warning: cached float parent {path} cannot be used ({problem}); training it again", file=sys.stderr)
    return None


def logits(net: torch.nn.Module, dm: FSDDDataModule, part: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and true classes of one part, in the split's (file name) order."""
    loader = DataLoader(dm.sets[part], batch_size=batch_size, collate_fn=Augment())
    out, labels = [], []
    with torch.no_grad():
        for x, lengths, y in loader:
            out.append(net(x, lengths))
            labels.append(y)
    return torch.cat(out), torch.cat(labels)


def evaluate(net: torch.nn.Module, dm: FSDDDataModule, part: str, batch_size: int) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of `net` on one part."""
    z, y = logits(net, dm, part, batch_size)
    return (z.argmax(1) == y).sum().item() / len(y), float(F.cross_entropy(z, y))


def deployed(cfg: Config, net: LSTMClassifier) -> torch.nn.Module:
    """The model as it runs on the device: `net`, or its dynamic int8 version for ptq_int8."""
    if cfg.quant.mode != "ptq_int8":
        return net
    plain = PlainClassifier(cfg.features.n_mfcc, cfg.model.hidden_size)
    plain.load_state_dict(net.state_dict())
    return dynamic_int8(plain.eval())


def eval_batch(cfg: Config) -> int:
    # Dynamic quantization picks activation ranges per call: evaluate clip by clip, as deployed.
    return 1 if cfg.quant.mode == "ptq_int8" else 256


def train(
    cfg: Config,
    dm: FSDDDataModule,
    out_dir: str | Path,
    callbacks: Sequence[Callback] = (),
    cache_dir: str | Path | None = None,
) -> tuple[LSTMClassifier, float | None, float | None]:
    """Train `cfg` (warm-started from its cached float parent for QAT); the validation-selected
    network, and the validation accuracy and loss of the deployed model (None without
    validation data: then the last epoch is taken). Test is not touched."""
    q = cfg.quant
    init = float_parent(cfg, dm, cache_dir) if q.mode == "qat" and q.warm_start else None
    net = fit(cfg, dm, out_dir, callbacks, init)
    if not dm.has_val:
        return net, None, None
    val_acc, val_loss = evaluate(deployed(cfg, net), dm, "val", eval_batch(cfg))
    return net, val_acc, val_loss


def save(
    cfg: Config, net: LSTMClassifier, dm: FSDDDataModule, out_dir: str | Path, estimate: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the artifact (model.safetensors) and the network's weights (weights.safetensors, to
    rebuild the torch model later); return the record of the run without test figures.
    `estimate`: the new-speaker figures the folds measured, stored in the artifact's metadata."""
    out_dir = Path(out_dir)
    q = cfg.quant
    record: dict[str, Any] = {
        "params": n_params(cfg),
        "hidden_size": cfg.model.hidden_size,
        "n_mfcc": cfg.features.n_mfcc,
        "split": cfg.train.split,
        "split_hash": dm.split.hash,
        "seed": cfg.train.seed,
        "epochs": cfg.train.epochs,
        "size_bytes": size_bytes(cfg),
        "size_bytes_study": size_bytes_study(cfg),
        "sparsity": measured_sparsity(net) if q.impl == "fast" else 0.0,
        "sparsity_target": sparsity(cfg),
        "quant": quant_label(cfg),
        "artifact": None,
    }
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    atomic_write(out_dir / "weights.safetensors", lambda tmp: save_file(state, tmp))
    if q.impl == "fast":  # QuantLSTM's integer activations are not part of the artifact format
        floats, biases, codes = artifact.from_model(cfg, net, deployed(cfg, net) if q.mode == "ptq_int8" else None)
        tensors = artifact.build_payload(cfg, floats, biases, (dm.mean.numpy(), dm.std.numpy()), codes)
        path = out_dir / "model.safetensors"
        written = artifact.write(path, tensors, artifact.metadata(cfg, dm.split.hash, cfg.train.seed, estimate))
        if written != record["size_bytes"]:
            raise RuntimeError(f"artifact payload {written} B differs from size_bytes {record['size_bytes']} B")
        record["artifact"] = str(path)
    return record


def load_net(cfg: Config, weights: str | Path) -> LSTMClassifier:
    """A trained network from its weights.safetensors."""
    net = build_model(cfg)
    net.load_state_dict(load_file(weights), strict=cfg.quant.impl != "quantlstm")
    return net.eval()


def scored_part(dm: FSDDDataModule) -> str:
    """The clips an artifact's predictions cover: its test set, or, for an `all` split (the
    refit of a speaker-protocol model, which has no test set), its training clips."""
    return "test" if "test" in dm.sets else "train"


def test(cfg: Config, net: LSTMClassifier, dm: FSDDDataModule, out_dir: str | Path) -> float | None:
    """Test accuracy of the deployed model (None for an `all` split: no test set); writes its
    per-clip predictions (predictions.json), which search.verify compares with the reference's."""
    part = scored_part(dm)
    z, labels = logits(deployed(cfg, net), dm, part, eval_batch(cfg))
    preds = z.argmax(1)
    names = [dm.names[i] for i in (dm.split.test if part == "test" else dm.split.train)]
    write_json(Path(out_dir) / "predictions.json", dict(zip(names, preds.tolist(), strict=True)), indent=None)
    return (preds == labels).sum().item() / len(labels) if part == "test" else None


def run(
    cfg: Config,
    data_dir: str | Path,
    out_dir: str | Path,
    cache_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Train, select on validation, export, then test once. Returns the result record."""
    start = time.time()
    out_dir = Path(out_dir)
    dm = make_datamodule(cfg, data_dir, cache_dir)  # bad data or split refused before anything is made
    out_dir.mkdir(parents=True, exist_ok=True)
    net, val_acc, val_loss = train(cfg, dm, out_dir, callbacks, cache_dir)
    record = save(cfg, net, dm, out_dir)
    result = {"val_acc": val_acc, "val_loss": val_loss, "test_acc": test(cfg, net, dm, out_dir), **record}
    result["wall_s"] = round(time.time() - start, 1)
    write_json(out_dir / "result.json", result, indent=2)
    return result


def run_speakers(cfg: Config, data_dir: str | Path, out_dir: str | Path, cache_dir: str | Path | None = None) -> tuple[dict, SpeakerTable]:
    """The six-speaker table of one configuration: every `loso:NAME` fold (search.speakers)."""
    start = time.time()
    out_dir = Path(out_dir)
    table = run_folds(cfg, data_dir, cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "protocol": PROTOCOL_SPEAKERS,
        **table.summary(),
        "size_bytes": size_bytes(cfg),
        "quant": quant_label(cfg),
        "hidden_size": cfg.model.hidden_size,
        "seed": cfg.train.seed,
        "test_speaker": cfg.train.test_speaker,
        "folds": [f.to_dict() for f in table.folds],
        "wall_s": round(time.time() - start, 1),
    }
    write_json(out_dir / "result.json", result, indent=2)
    return result, table


def quant_label(cfg: Config) -> str:
    """fp32, ptq_int8, or e.g. qat4-po2 / qat8-float-pc."""
    q = cfg.quant
    return q.mode if q.mode != "qat" else f"qat{q.bits}-{q.scale}{'-pc' if q.per_channel else ''}"


def quiet() -> None:
    """Keep stdout for the result line: Lightning's info messages and library warnings off."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/baseline.yaml", help="YAML config (default: %(default)s)")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument(
        "--split",
        help="override train.split: random | official | speaker:NAME | loso:NAME | all; "
        "or speakers: every loso fold, printing the per-speaker table",
    )
    p.add_argument("--test-speaker", help="override train.test_speaker: a speaker kept out of everything")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--data-dir", help="FSDD recordings folder (default: $FSDD_DIR, else download to the cache)")
    p.add_argument("--cache-dir", help="feature/parent cache (default: $FSDD_CACHE or ~/.cache/fsdd)")
    p.add_argument("--out", help="output folder (default: runs/train/<config>-seed<N>)")
    args = p.parse_args(argv)
    quiet()
    try:
        cfg = load_config(args.config)
        speakers = args.split == PROTOCOL_SPEAKERS or (args.split is None and cfg.train.split == PROTOCOL_SPEAKERS)
        split = None if speakers else args.split
        pairs = (("seed", args.seed), ("split", split), ("epochs", args.epochs), ("test_speaker", args.test_speaker))
        overrides = {k: v for k, v in pairs if v is not None}
        if overrides:
            cfg = cfg.replace(train=overrides)
        data_dir = resolve_data_dir(args.data_dir)
        out = args.out or f"runs/train/{Path(args.config).stem}-{'speakers-' if speakers else ''}seed{cfg.train.seed}"
        if speakers:
            result, table = run_speakers(cfg, data_dir, out, args.cache_dir)
            title = f"{args.config}: {result['quant']} h{cfg.model.hidden_size}, {result['size_bytes']} B, seed {cfg.train.seed}"
            print(table.format(title))
        else:
            result = run(cfg, data_dir, out, args.cache_dir)
    except (DataError, ConfigError, artifact.ArtifactError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # diverged (NaN/inf loss): a property of the settings, said in one line
        print(f"error: {e}; try a lower train.lr", file=sys.stderr)
        return 1
    except OSError as e:  # a path that cannot be made or read: a file where a folder must be, a name too long
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

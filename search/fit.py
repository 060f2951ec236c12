"""One training run as a library: the data, training (pruning; QAT warm-started from a cached float
parent), the deployed model, its artifact and its test predictions. search.protocol decides which
runs a configuration needs; search.train and search.run are the commands."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, LearningRateMonitor
from pytorch_lightning.loggers import TensorBoardLogger
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from fsdd.datamodule import Augment, FSDDDataModule
from fsdd.download import default_cache_dir
from fsdd.errors import Error
from fsdd.files import atomic_write, write_json
from fsdd.schema import dump
from fsdd.synth import resolve
from search import artifact
from search.model import LitClassifier, LSTMClassifier, PlainClassifier, build_model
from search.prune import effective_state_dict, pruning_callback
from search.quant import dynamic_int8, int_weights
from search.schema import Config, QuantConfig
from search.selection import selection_key
from search.size import size_bytes


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


def with_voices(cfg: Config, off: bool = False) -> tuple[Config, str]:
    """`cfg` with its synthetic voices made explicit (fsdd.synth.resolve: the engines installed
    here when none are named; none with `off`), and a note of one line for the user ("" if none)."""
    if cfg.voices.synth is None or off:
        return cfg.replace(voices={"synth": None}), ""
    synth, note = resolve(cfg.voices.synth)
    return cfg.replace(voices={"synth": dump(synth) if synth else None}), note


def make_datamodule(cfg: Config, data: Any, cache_dir: str | Path | None = None) -> FSDDDataModule:
    """The data of `cfg`'s split, set up; `data`: a recordings folder or corpora (fsdd.corpora.as_corpora).
    DataError (one line) for unusable data or a split this data cannot make."""
    t = cfg.train
    dm = FSDDDataModule(
        data, cfg.features, t.split, t.seed, t.batch_size, t.channel_drop, t.frame_drop, cache_dir, t.test_speaker, cfg.augment, t.folds,
        cfg.voices,
    )  # fmt: skip
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
    try:
        trainer.fit(lit, datamodule=dm)
    except FloatingPointError as e:  # diverged (NaN/inf loss): a property of the settings, said in one line
        raise Error(f"{e}; try a lower train.lr") from None
    if best.state is None:
        raise RuntimeError("no validation epoch after the last pruning step")
    net.load_state_dict(best.state)
    return net.eval()


def warm_start(net: LSTMClassifier, state: dict[str, torch.Tensor]) -> None:
    """Load a float parent's weights into a QAT network (whose weight quantizers hold no state)."""
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any("quant" not in k and not k.split(".")[1].startswith("wq") for k in missing):
        raise RuntimeError(f"warm start does not fit: missing {missing}, unexpected {unexpected}")


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
    same tensor names, shapes and dtypes): a cache that cannot be used is recomputed."""
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


def model_weights(cfg: Config, net: LSTMClassifier) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """What search.artifact.build_payload stores of a trained network: its float weights and biases
    by layout name, and, for ptq_int8 and qat, the integer codes and scales it computes with."""
    lstm, fc = net.lstm, net.fc
    w = {"lstm.weight_ih": lstm.weight_ih_l0, "lstm.weight_hh": lstm.weight_hh_l0, "fc.weight": fc.weight}
    floats = {k: v.detach().float().numpy() for k, v in w.items()}
    biases = {"lstm.bias": (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy(), "fc.bias": fc.bias.detach().numpy()}
    codes = {}
    if cfg.quant.mode == "qat":
        proxies = {"lstm.weight_ih": lstm.wq_ih, "lstm.weight_hh": lstm.wq_hh, "fc.weight": fc.wq}
        for k, v in w.items():
            c, s = int_weights(proxies[k], v)
            codes[k] = (c.numpy(), s.numpy())
    elif cfg.quant.mode == "ptq_int8":
        ptq = deployed(cfg, net)
        wb = ptq.lstm._weight_bias()["weight"]
        qw = {"lstm.weight_ih": wb["weight_ih_l0"], "lstm.weight_hh": wb["weight_hh_l0"], "fc.weight": ptq.fc.weight()}
        for k, v in qw.items():
            if v.q_zero_point() != 0:
                raise RuntimeError(f"{k}: dynamic int8 weight is not symmetric")
            codes[k] = (v.int_repr().numpy(), np.array([v.q_scale()], dtype=np.float32))
    return floats, biases, codes


def corpora_meta(dm: FSDDDataModule) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The artifact's `corpora` (real corpora: name and clip count) and `voices` (training-only ones) metadata."""
    clips = dm.clips
    real = [{"name": c.name, "clips": len(span)} for c, span in zip(clips.corpora, clips.spans, strict=True) if not c.train_only]
    extra = [{"name": c.name, "clips": len(span)} for c, span in zip(clips.corpora, clips.spans, strict=True) if c.train_only]
    return real, ({"corpora": extra} if extra else None)


def save(cfg: Config, net: LSTMClassifier, dm: FSDDDataModule, out_dir: str | Path, estimate: dict[str, Any] | None = None) -> Path:
    """Write the artifact (model.safetensors) and the network's weights (weights.safetensors, to
    rebuild the torch model later); the artifact's path. `estimate`: the new-speaker figures the
    folds measured, stored in the artifact's metadata. Every mode a config allows is saved."""
    out_dir = Path(out_dir)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    atomic_write(out_dir / "weights.safetensors", lambda tmp: save_file(state, tmp))
    floats, biases, codes = model_weights(cfg, net)
    tensors = artifact.build_payload(cfg, floats, biases, (dm.mean.numpy(), dm.std.numpy()), codes)
    path = out_dir / "model.safetensors"
    corpora, voices = corpora_meta(dm)
    written = artifact.write(path, tensors, artifact.metadata(cfg, dm.split.hash, cfg.train.seed, corpora, estimate, voices))
    if written != size_bytes(cfg):
        raise RuntimeError(f"artifact payload {written} B differs from size_bytes {size_bytes(cfg)} B")
    return path


def load_net(cfg: Config, weights: str | Path) -> LSTMClassifier:
    """A trained network from its weights.safetensors."""
    net = build_model(cfg)
    net.load_state_dict(load_file(weights))
    return net.eval()


def test(cfg: Config, net: LSTMClassifier, dm: FSDDDataModule, out_dir: str | Path) -> float | None:
    """Test accuracy of the deployed model, touched once (None for an `all` split: no test set);
    writes its predictions on the scored clips (FSDDDataModule.scored) to predictions.json,
    {clip key: class}, which search.verify compares with the numpy reference's."""
    part = "test" if dm.split.test else "scored"
    z, labels = logits(deployed(cfg, net), dm, part, eval_batch(cfg))
    preds = z.argmax(1)
    names = [dm.names[i] for i in dm.scored]
    write_json(Path(out_dir) / "predictions.json", dict(zip(names, preds.tolist(), strict=True)), indent=None)
    return (preds == labels).sum().item() / len(labels) if part == "test" else None


def quant_label(cfg: Config) -> str:
    """fp32, ptq_int8, or e.g. qat4-po2 / qat8-float-pc."""
    q = cfg.quant
    return q.mode if q.mode != "qat" else f"qat{q.bits}-{q.scale}{'-pc' if q.per_channel else ''}"


def quiet() -> None:
    """Keep stdout for the result line: Lightning's info messages and library warnings off."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

"""LSTM + Linear classifier, and its LightningModule."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from search.quant import fake_quant, weight_quantizer
from search.schema import N_CLASSES, Config, QuantConfig


class FusedLSTM(nn.Module):
    """One batch-first LSTM layer with nn.LSTM's parameter names and init, run by PyTorch's
    fused kernel. Weights are read as attributes at call time, so Lightning's pruning hooks
    (which rewrite `weight_*` before forward) and an optional weight fake-quantizer both take
    effect; nn.LSTM itself caches flat weights and would need both patched in."""

    def __init__(self, input_size: int, hidden_size: int, quant: QuantConfig | None = None):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        self.wq_ih = weight_quantizer(4 * hidden_size, input_size, quant) if quant else None
        self.wq_hh = weight_quantizer(4 * hidden_size, hidden_size, quant) if quant else None

    def effective_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        w_ih, w_hh = self.weight_ih_l0, self.weight_hh_l0
        if self.wq_ih is not None:
            w_ih, w_hh = fake_quant(self.wq_ih, w_ih), fake_quant(self.wq_hh, w_hh)
        return w_ih, w_hh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_ih, w_hh = self.effective_weights()
        h0 = x.new_zeros(1, x.shape[0], self.hidden_size)
        # torch.lstm is the op nn.LSTM.forward calls (gates i, f, g, o).
        out, _, _ = torch.lstm(x, (h0, h0), [w_ih, w_hh, self.bias_ih_l0, self.bias_hh_l0], True, 1, 0.0, self.training, False, True)
        return out


class QLinear(nn.Linear):
    """nn.Linear whose weight optionally passes through a Brevitas fake-quantizer."""

    def __init__(self, in_features: int, out_features: int, quant: QuantConfig | None = None):
        super().__init__(in_features, out_features)
        self.wq = weight_quantizer(out_features, in_features, quant) if quant else None

    def effective_weight(self) -> torch.Tensor:
        return self.weight if self.wq is None else fake_quant(self.wq, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


def last_step(out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each sequence's output at its own last step: the LSTM is causal, so the zero padding
    after that step never reaches it (unlike out[:, -1], the manual study's bug)."""
    return out[torch.arange(out.shape[0]), lengths - 1]


class LSTMClassifier(nn.Module):
    """LSTM (one layer) + Linear over the last step. `quant` set: QAT with quantized weights."""

    def __init__(self, input_size: int, hidden_size: int, quant: QuantConfig | None = None, dropout: float = 0.0):
        super().__init__()
        self.lstm = FusedLSTM(input_size, hidden_size, quant)
        self.drop = nn.Dropout(dropout)  # training only: the deployed network has no dropout
        self.fc = QLinear(hidden_size, N_CLASSES, quant)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(last_step(self.lstm(x), lengths)))


class PlainClassifier(nn.Module):
    """The same network on nn.LSTM/nn.Linear, the input PyTorch's dynamic quantization expects."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, N_CLASSES)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.fc(last_step(self.lstm(x)[0], lengths))


def build_model(cfg: Config) -> LSTMClassifier:
    quant = cfg.quant if cfg.quant.mode == "qat" else None
    return LSTMClassifier(cfg.features.n_mfcc, cfg.model.hidden_size, quant, cfg.train.dropout)


class LitClassifier(pl.LightningModule):
    """Trains an LSTMClassifier with Adam; logs train_loss, val_acc, val_loss (and the LR via callback)."""

    def __init__(self, cfg: Config, net: LSTMClassifier | None = None):
        super().__init__()
        self.cfg = cfg
        self.net = net if net is not None else build_model(cfg)
        # Lightning's manual optimization: the automatic loop's closure and per-step hooks cost
        # about 0.25 ms a step, a sixth of a small LSTM's step (bench/features_and_epoch.py).
        self.automatic_optimization = False
        self._correct = self._seen = 0
        self._loss_sum, self._loss_n = torch.zeros(()), 0

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net(x, lengths)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        x, lengths, y = batch
        loss = F.cross_entropy(self(x, lengths), y, label_smoothing=self.cfg.train.label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged: loss is {loss.item()} at epoch {self.current_epoch}")
        opt = self.optimizers(use_pl_optimizer=False)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        # Summed here and logged once per epoch: self.log per step costs more than a small LSTM step.
        self._loss_sum += loss.detach() * len(y)
        self._loss_n += len(y)
        return loss

    @property
    def epoch_train_loss(self) -> float:
        """Mean training loss of the current epoch so far. Callbacks' on_train_epoch_end runs
        before this module's (which logs `train_loss`), so they read it here."""
        return float(self._loss_sum / max(self._loss_n, 1))

    def on_train_epoch_end(self) -> None:
        self.log("train_loss", self._loss_sum / max(self._loss_n, 1))
        self._loss_sum, self._loss_n = torch.zeros(()), 0
        sched = self.lr_schedulers()
        if sched is not None:  # manual optimization steps its schedulers itself
            sched.step()

    def on_validation_epoch_start(self) -> None:
        self._correct = self._seen = 0
        self._val_loss = 0.0

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        x, lengths, y = batch
        logits = self(x, lengths)
        self._correct += (logits.argmax(1) == y).sum().item()
        self._val_loss += F.cross_entropy(logits, y, reduction="sum").item()
        self._seen += len(y)

    def on_validation_epoch_end(self) -> None:
        self.log("val_acc", self._correct / max(self._seen, 1))
        self.log("val_loss", self._val_loss / max(self._seen, 1))

    def configure_optimizers(self):
        t = self.cfg.train
        opt = torch.optim.Adam(self.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        if t.lr_schedule == "constant":
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

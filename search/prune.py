"""Magnitude pruning driven by Lightning's ModelPruning callback, and its measurement."""

from __future__ import annotations

import torch
from pytorch_lightning.callbacks import ModelPruning
from torch import nn

from search.schema import PruneConfig


def pruned_tensors(net: nn.Module) -> list[tuple[nn.Module, str]]:
    # Explicit (module, name) pairs: ModelPruning only discovers parameters named "weight".
    return [(net.lstm, "weight_ih_l0"), (net.lstm, "weight_hh_l0"), (net.fc, "weight")]


def pruning_callback(net: nn.Module, prune: PruneConfig) -> ModelPruning | None:
    """ModelPruning that prunes each weight tensor separately (LSTM and Linear weights have
    different scales) by `rate` of its remaining weights at the end of each scheduled epoch,
    keeps the surviving weights as trained (no lottery-ticket reset)."""
    if not prune.schedule:
        return None
    rates = dict(prune.schedule)
    return ModelPruning(
        "l1_unstructured",
        parameters_to_prune=pruned_tensors(net),
        amount=lambda epoch: rates.get(epoch, 0.0),
        use_global_unstructured=False,
        use_lottery_ticket_hypothesis=False,
        make_pruning_permanent=True,
        verbose=0,
    )


def effective_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with pruning masks applied and the `_orig`/`_mask` split undone, so it loads
    into an unpruned copy of the module."""
    sd = module.state_dict()
    out = {}
    for key, value in sd.items():
        if key.endswith("_mask"):
            continue
        if key.endswith("_orig"):
            base = key[: -len("_orig")]
            out[base] = (value * sd[base + "_mask"]).detach().clone()
        else:
            out[key] = value.detach().clone()
    return out


def measured_sparsity(net: nn.Module) -> float:
    """Fraction of exactly-zero weights in the pruned tensors of a trained network."""
    zeros = total = 0
    for module, name in pruned_tensors(net):
        w = getattr(module, name)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total

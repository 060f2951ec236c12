"""How trained models are ranked: one rule for epochs, trials, the Pareto front and the winner."""

from __future__ import annotations

import math
from typing import Any


def selection_key(val_acc: float, val_loss: float) -> tuple[float, float]:
    """Validation accuracy, ties broken by lower validation loss. With 450 validation clips,
    accuracy moves in steps of 0.22 % and many good models tie on it; the loss still tells
    a confident model from one that is right by a hair."""
    return (val_acc, -val_loss)


def record_key(r: dict[str, Any]) -> tuple[float, float]:
    """`selection_key` of a trial record (records written before val_loss rank last on a tie)."""
    return selection_key(r["val_acc"], r.get("val_loss", math.inf))


def cost(r: dict[str, Any]) -> int:
    """What the run's budget counts for a record (search.space.cost_bytes); records written
    before budgets on flash existed count their artifact's size."""
    return r.get("cost_bytes", r["size_bytes"])


def pareto_front(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-dominated records: no other ranks at least as high (`record_key`) and costs less (`cost`)."""
    front: list[dict[str, Any]] = []
    for r in sorted(records, key=lambda r: (cost(r), [-k for k in record_key(r)])):
        if not front or record_key(r) > record_key(front[-1]):
            front.append(r)
    return front

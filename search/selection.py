"""How trained models are ranked: one rule for epochs, trials, the Pareto front and the winner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

R = TypeVar("R")


def selection_key(val_acc: float, val_loss: float) -> tuple[float, float]:
    """Validation accuracy, ties broken by lower validation loss. With 450 validation clips,
    accuracy moves in steps of 0.22 % and many good models tie on it; the loss still tells
    a confident model from one that is right by a hair."""
    return (val_acc, -val_loss)


def record_key(r: Any) -> tuple[float, float]:
    """`selection_key` of a trial record or front row (anything with val_acc and val_loss)."""
    get = r.get if isinstance(r, dict) else lambda k: getattr(r, k)
    return selection_key(get("val_acc"), get("val_loss"))


def _cost(r: Any) -> int:
    return r["cost_bytes"] if isinstance(r, dict) else r.cost_bytes


def pareto_front(records: Sequence[R]) -> list[R]:
    """Non-dominated records, cheapest first: no other ranks at least as high (`record_key`) and
    costs less (`cost_bytes`, what the budget counts)."""
    front: list[R] = []
    for r in sorted(records, key=lambda r: (_cost(r), [-k for k in record_key(r)])):
        if not front or record_key(r) > record_key(front[-1]):
            front.append(r)
    return front


def winner(rows: Sequence[R]) -> R | None:
    """The top of a front: the best ranked, the cheapest on a tie (test figures only report)."""
    return max(rows, key=lambda r: (*record_key(r), -_cost(r))) if rows else None

"""The joint search space (configs/search.yaml), as an Optuna define-by-run function.

Repair instead of rejection: the hidden size is drawn last, as a fraction of the hidden
sizes that still fit the budget given every other choice, so the sampler cannot propose a
configuration over budget. Only when even the smallest hidden size does not fit (e.g. float32
with many MFCCs at a tiny budget) is the configuration infeasible; it is then marked with an
Optuna constraint (so TPE learns to avoid it) and never trained.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from fsdd.errors import ConfigError
from search.deploy.predict import predict_flash
from search.schema import Budget, Config, SearchConfig
from search.size import size_bytes


def check_against_base(sc: SearchConfig) -> None:
    """Every front end the space can pick must be valid with the base features (checked here,
    in the driver, because the define-by-run function must never raise)."""
    s, f = sc.space, sc.base.features
    # The space's extremes as run configs: a hidden size or learning rate a run refuses fails here, naming the field.
    for h in (min(s.hidden_sizes), max(s.hidden_sizes)):
        for lr in (s.lr[0], s.lr[-1]):
            try:
                sc.base.replace(model={"hidden_size": h}, train={"lr": lr})
            except ConfigError as e:
                raise ConfigError(f"space.hidden_sizes/lr: {h}/{lr} as a run config: {e}") from None
    for n in s.n_mfcc:
        for hop in s.hop_length:
            for n_fft in s.n_fft or (f.n_fft,):
                for n_mels in s.n_mels or (f.n_mels,):
                    point = {"n_mfcc": n, "hop_length": hop, "n_fft": n_fft, "n_mels": n_mels}
                    try:
                        sc.base.replace(features=front_end(sc.base, point))
                    except ConfigError as e:
                        raise ConfigError(f"space.n_mfcc/hop_length/n_fft/n_mels: {point} with the base features: {e}") from None


def prune_schedule(sparsity: float, start: int, end: int, steps: int) -> list[list]:
    """`steps` equal pruning rates spread over epochs start..end whose product reaches `sparsity`."""
    epochs = sorted({round(start + (end - start) * k / max(steps - 1, 1)) for k in range(steps)})
    rate = 1 - (1 - sparsity) ** (1 / len(epochs))
    return [[e, rate] for e in epochs]


def front_end(base: Config, p: dict[str, Any]) -> dict[str, Any]:
    """The feature fields a point of the space sets (n_mfcc, hop_length, and n_fft and cmvn where
    the space offers them). An FFT shorter than the base's window gets a window as long as itself."""
    features = {"n_mfcc": p["n_mfcc"], "hop_length": p["hop_length"], **{k: p[k] for k in ("n_fft", "n_mels", "cmvn") if k in p}}
    n_fft = features.get("n_fft", base.features.n_fft)
    if base.features.win_length is not None and base.features.win_length > n_fft:
        features["win_length"] = None
    return features


def to_config(base: Config, p: dict[str, Any]) -> Config:
    """The run Config of one point of the space (a flat dict of sampled and derived values)."""
    quant: dict[str, Any] = {"mode": p["quant"]}
    train: dict[str, Any] = {"lr": p["lr"]}
    if p["quant"] == "qat":
        quant.update(bits=p["bits"], scale=p["scale"], per_channel=p["per_channel"], warm_start=p["warm_start"])
        if p["warm_start"]:
            quant.update(parent_epochs=base.train.epochs, parent_lr=base.train.lr)
            train["epochs"] = p["epochs"]
    schedule = prune_schedule(p["sparsity"], p["prune_start"], p["prune_end"], p["prune_steps"]) if p.get("prune") else []
    return base.replace(
        model={"hidden_size": p["hidden_size"]},
        features=front_end(base, p),
        train=train,
        prune={"schedule": schedule},
        quant=quant,
    )


def cost(budget: Budget, cfg: Config) -> int:
    """The bytes `cfg` spends of the budget (`cost_bytes` in reports and records): its artifact's
    payload, or the predicted flash of its whole C library (`budget.on == "flash"`)."""
    return predict_flash(cfg).flash_bytes if budget.on == "flash" else size_bytes(cfg)


def over(budget: Budget, cfg: Config) -> int:
    """How far `cfg` is over the budget in bytes (<= 0: it fits), RAM included when it is bounded."""
    excess = cost(budget, cfg) - budget.bytes
    if budget.ram_bytes is None:
        return excess
    return max(excess, predict_flash(cfg).ram_bytes - budget.ram_bytes)


def define(trial: optuna.Trial, sc: SearchConfig, budget: Budget | int) -> dict[str, Any]:
    """Optuna define-by-run space. Returns the derived values (hidden size, epochs, size, cost).
    A plain int budget counts the artifact's payload bytes."""
    s, base = sc.space, sc.base
    budget = budget if isinstance(budget, Budget) else Budget(budget)
    p: dict[str, Any] = {"quant": trial.suggest_categorical("quant", list(s.quant_modes))}
    if p["quant"] == "qat":
        p["bits"] = trial.suggest_int("bits", s.qat_bits[0], s.qat_bits[-1])
        p["scale"] = trial.suggest_categorical("scale", list(s.qat_scales))
        p["per_channel"] = trial.suggest_categorical("per_channel", list(s.qat_per_channel))
        p["warm_start"] = trial.suggest_categorical("warm_start", list(s.qat_warm_start))
    p["n_mfcc"] = trial.suggest_categorical("n_mfcc", list(s.n_mfcc))
    p["hop_length"] = trial.suggest_categorical("hop_length", list(s.hop_length))
    for name in ("n_fft", "n_mels", "cmvn"):  # searched only when the space offers a choice
        options = list(getattr(s, name))
        if len(options) > 1:
            p[name] = trial.suggest_categorical(name, options)
        elif options:
            p[name] = options[0]
    p["lr"] = trial.suggest_float("lr", s.lr[0], s.lr[-1], log=True)
    epochs = s.qat_epochs if p.get("warm_start") else base.train.epochs
    derived: dict[str, Any] = {"epochs": epochs}
    # Pruning needs an epoch after its last step: offered only when there are two epochs or more.
    if s.prune and epochs >= 2 and trial.suggest_categorical("prune", [False, True]):
        p["prune"] = True
        p["sparsity"] = trial.suggest_float("sparsity", s.prune_sparsity[0], s.prune_sparsity[-1])
        # Start and end as fractions of training: their range does not depend on the epochs.
        start = trial.suggest_float("prune_start", 0.0, 0.5)
        span = trial.suggest_float("prune_span", 0.0, 1.0)
        last = epochs - 2  # leave at least one epoch to recover after the last step
        derived["prune_start"] = min(last, round(start * last))
        derived["prune_end"] = derived["prune_start"] + round(span * (last - derived["prune_start"]))
        derived["prune_steps"] = trial.suggest_int("prune_steps", 1, s.prune_max_steps)
    p.update(derived)

    def at(h: int) -> Config:
        return to_config(base, {**p, "hidden_size": h})

    fitting = [h for h in sorted(s.hidden_sizes) if over(budget, at(h)) <= 0]
    frac = trial.suggest_float("size_frac", 0.0, 1.0)
    h = fitting[min(int(frac * len(fitting)), len(fitting) - 1)] if fitting else min(s.hidden_sizes)
    trial.set_constraint("size_over_budget", over(budget, at(h)))
    derived.update(hidden_size=h, size_bytes=size_bytes(at(h)), cost_bytes=cost(budget, at(h)), feasible=bool(fitting))
    return derived


def hparam_domains(sc: SearchConfig) -> dict[str, list | tuple]:
    """Every parameter `define` draws or derives, with its domain (discrete values, or an interval
    (low, high)): the columns of the run's one HParams experiment (search.board.write_experiment)."""
    s, base = sc.space, sc.base
    epochs = sorted({base.train.epochs, *([s.qat_epochs] if "qat" in s.quant_modes and True in s.qat_warm_start else [])})
    d: dict[str, list | tuple] = {"quant": list(s.quant_modes)}
    if "qat" in s.quant_modes:
        d |= {"bits": (s.qat_bits[0], s.qat_bits[-1]), "scale": list(s.qat_scales), "per_channel": list(s.qat_per_channel)}
        d["warm_start"] = list(s.qat_warm_start)
    d |= {"n_mfcc": list(s.n_mfcc), "hop_length": list(s.hop_length)}
    d |= {name: list(getattr(s, name)) for name in ("n_fft", "n_mels", "cmvn") if len(getattr(s, name)) > 1}
    d |= {"lr": (s.lr[0], s.lr[-1]), "epochs": epochs}
    if s.prune and max(epochs) >= 2:
        last = max(epochs) - 2
        d |= {"prune": [False, True], "sparsity": (s.prune_sparsity[0], s.prune_sparsity[-1])}
        d |= {"prune_start": (0, last), "prune_span": (0.0, 1.0), "prune_end": (0, last), "prune_steps": (1, s.prune_max_steps)}
    d |= {"size_frac": (0.0, 1.0), "hidden_size": sorted(s.hidden_sizes)}
    return d


def start_points(sc: SearchConfig) -> list[dict[str, Any]]:
    """The searcher's first guesses, tried before anything is sampled: the largest model the
    budget allows (size_frac 1), no pruning, the base training and front end, as 4-bit QAT,
    float32 and 8-bit QAT (the manual study's lesson: at a size budget, a wide quantized model
    beats a narrow float one). Only values the space contains are used."""
    s, base = sc.space, sc.base

    def pick(options: tuple, preferred: Any) -> Any:
        return preferred if preferred in options else options[0]

    common = {
        "n_mfcc": pick(s.n_mfcc, base.features.n_mfcc),
        "hop_length": pick(s.hop_length, base.features.hop_length),
        **{name: pick(getattr(s, name), getattr(base.features, name)) for name in ("n_fft", "n_mels", "cmvn") if getattr(s, name)},
        "lr": min(max(base.train.lr, s.lr[0]), s.lr[-1]),
        "size_frac": 1.0,
        **({"prune": False} if s.prune else {}),
    }
    qat = {"quant": "qat", "scale": pick(s.qat_scales, "float"), "per_channel": pick(s.qat_per_channel, False)}
    # From scratch: a warm start trains a float parent that only siblings can share, and a
    # first guess has none yet (4-bit h=20: 7.6 s from scratch, 11.2 s with its parent).
    qat["warm_start"] = pick(s.qat_warm_start, False)
    points = []
    if "qat" in s.quant_modes:
        points.append({**qat, "bits": min(max(4, s.qat_bits[0]), s.qat_bits[-1]), **common})
    if "fp32" in s.quant_modes:  # second: the cheapest to train, an early answer at loose budgets
        points.append({"quant": "fp32", **common})
    if "qat" in s.quant_modes and s.qat_bits[-1] != points[0]["bits"]:
        points.append({**qat, "bits": s.qat_bits[-1], **common})
    return points


def smallest_ram(sc: SearchConfig) -> int:
    """Predicted RAM (static + stack) of the smallest C library the space can express."""
    base = sc.base
    best = math.inf
    for n_fft in sc.space.n_fft or (base.features.n_fft,):
        for n_mels in sc.space.n_mels or (base.features.n_mels,):
            p = {"quant": "qat", "bits": 2, "scale": "po2", "per_channel": False, "warm_start": False, "lr": sc.space.lr[0]}
            p |= {"n_mfcc": min(sc.space.n_mfcc), "hop_length": max(sc.space.hop_length), "n_fft": n_fft, "n_mels": n_mels}
            p |= {"epochs": base.train.epochs, "hidden_size": min(sc.space.hidden_sizes)}
            best = min(best, predict_flash(to_config(base, p)).ram_bytes)
    return int(best)


def smallest_size(sc: SearchConfig, budget_on: str = "weights") -> int:
    """Cost (Budget.cost) of the smallest model the space can express (fails fast on an impossible budget)."""
    s, best = sc.space, math.inf
    for mode in s.quant_modes:
        p: dict[str, Any] = {"quant": mode, "lr": s.lr[0], "n_mfcc": min(s.n_mfcc), "hop_length": s.hop_length[0]}
        p.update(bits=s.qat_bits[0], scale="po2" if "po2" in s.qat_scales else "float", per_channel=False, warm_start=False)
        p.update(epochs=sc.base.train.epochs, hidden_size=min(s.hidden_sizes))
        if s.prune and sc.base.train.epochs >= 2:
            p.update(prune=True, sparsity=s.prune_sparsity[-1], prune_start=0, prune_end=0, prune_steps=1)
        for n_fft in s.n_fft or (sc.base.features.n_fft,):  # the front end changes the flash (tables)
            for n_mels in s.n_mels or (sc.base.features.n_mels,):
                cfg = to_config(sc.base, {**p, "n_fft": n_fft, "n_mels": n_mels})
                best = min(best, cost(Budget(1, budget_on), cfg))
    return int(best)

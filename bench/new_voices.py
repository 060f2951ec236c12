"""New voices, two measures: FSDD's six held-out speakers, and speakers recorded elsewhere.

For each configuration (a config file, or the winner of a search run) and each seed:
- FSDD's held-out-speaker folds: trained on five speakers (plus the configuration's synthetic
  voices), scored on the sixth, every speaker in turn: the per-speaker table, its mean and worst;
- the same configuration trained on all six FSDD speakers (split `all`), exported, and scored by
  the numpy reference (search.verify, split `eval`) on every clip of `--others`, a folder of
  speakers recorded elsewhere that nothing here trains on: its accuracy and worst speaker.
Configs named `...-36k`, `...-4k` or `...-chip` are held to issue 14's targets (and their budgets),
printed beside the figures measured before this work. Prints Markdown, then one JSON line.

Usage: FSDD_DIR=... python bench/new_voices.py --config configs/new-voices-36k.yaml [--run runs/NAME]
           [--seeds 0 1] --others ../shared/voices/agrim9
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from fsdd.download import resolve_data_dir
from fsdd.schema import Corpus, load
from search.deploy import predict_flash
from search.fit import make_datamodule, quant_label, quiet, save, train, with_voices
from search.protocol import SpeakerFolds
from search.schema import Config, load_config
from search.size import KIB, size_bytes
from search.verify import verify

# Issue 14's targets: (budget check, FSDD mean, FSDD worst, others) and what main measured before it
# (586ce61: the default search's members, and docs/deploy.md's showcase model on the chip).
TARGETS = {
    "36k": {"fsdd_mean": 0.92, "fsdd_worst": 0.85, "others": 0.92},
    "4k": {"fsdd_mean": 0.88, "others": 0.88},
    "chip": {"fsdd_mean": 0.85, "others": 0.85},
}
BEFORE = {
    "36k": "qat8-float h80, 31,996 B: FSDD 0.839 (worst 0.776), others 0.813",
    "4k": "ptq_int8 h20, 3,316 B: FSDD 0.799 (worst 0.740), others 0.726",
    "chip": "qat4-po2 h16 n_fft 128, 3,795 B flash (random split): others 0.49; the default front end: 0.69",
}


def budget_ok(target: str, cfg: Config) -> tuple[bool, str]:
    if target == "chip":
        r = predict_flash(cfg)
        return r.flash_bytes <= 8 * KIB and r.ram_bytes <= 2 * KIB, f"flash {r.flash_bytes} B, RAM {r.ram_bytes} B (predicted)"
    limit = {"36k": 36, "4k": 4}[target] * KIB
    return size_bytes(cfg) <= limit, f"{size_bytes(cfg)} B of weights"


def winner_config(run_dir: Path) -> Config:
    summary = json.loads((run_dir / "pareto.json").read_text())
    if not summary.get("winner"):
        raise SystemExit(f"{run_dir}: no winner in pareto.json")
    return load(Config, summary["winner"]["config"])


def measure(name: str, cfg: Config, seed: int, fsdd: Path, others: Path | None, cache: str | None) -> dict:
    cfg = cfg.replace(train={"seed": seed, "test_speaker": None})
    table = SpeakerFolds().run_folds(cfg.replace(train={"split": "speakers"}), fsdd, cache)
    print(table.format(f"\n{name}: {quant_label(cfg)} h{cfg.model.hidden_size}, {size_bytes(cfg)} B, seed {seed}"), flush=True)
    row = {"seed": seed, "fsdd": {f.speaker: f.acc for f in table.folds}, "fsdd_mean": table.mean_acc, "fsdd_worst": table.worst.acc}
    if others is not None:
        every = cfg.replace(train={"split": "all"})
        dm = make_datamodule(every, fsdd, cache)
        net, _, _ = train(every, dm, None, (), cache)
        with tempfile.TemporaryDirectory() as tmp:
            got = verify(save(every, net, dm, tmp), [Corpus("others", str(others))], split="eval")
        row |= {"others": got["test_acc"], "others_worst": min(got["speakers"].values()), "others_speakers": got["speakers"]}
        print(f"trained on all six, on {others.name}: {got['test_acc']:.3f} (worst speaker {row['others_worst']:.3f})", flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], help="a search run folder: its winner's config")
    p.add_argument("--config", action="append", default=[], help="a config file")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--others", type=Path, help="a folder of speakers recorded elsewhere, only ever scored (e.g. ../shared/voices/agrim9)")
    p.add_argument("--data-dir")
    p.add_argument("--cache-dir")
    args = p.parse_args()
    quiet()
    fsdd = resolve_data_dir(args.data_dir)
    configs = [(Path(c).stem, load_config(c)) for c in args.config] + [(f"winner of {r}", winner_config(Path(r))) for r in args.run]
    results = []
    for name, cfg in configs:
        cfg, note = with_voices(cfg)
        if note:
            print(f"note: {note}", flush=True)
        rows = [measure(name, cfg, seed, fsdd, args.others, args.cache_dir) for seed in args.seeds]
        mean = {k: statistics.mean(r[k] for r in rows) for k in ("fsdd_mean", "fsdd_worst", "others") if k in rows[0]}
        target = next((t for t in TARGETS if name.endswith(f"-{t}")), None)
        results.append({"name": name, "quant": quant_label(cfg), "hidden_size": cfg.model.hidden_size, "size_bytes": size_bytes(cfg),
                        "seeds": rows, "mean": mean, "target": target})  # fmt: skip
    print("\n| configuration | size | seed | FSDD mean | FSDD worst | others | others worst |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for s in r["seeds"]:
            others = f"{s['others']:.3f} | {s['others_worst']:.3f}" if "others" in s else "- | -"
            print(f"| {r['name']} ({r['quant']} h{r['hidden_size']}) | {r['size_bytes']} B | {s['seed']} | {s['fsdd_mean']:.3f} | "
                  f"{s['fsdd_worst']:.3f} | {others} |")  # fmt: skip
        m = r["mean"]
        print(f"| **mean of seeds** | | | **{m['fsdd_mean']:.3f}** | {m['fsdd_worst']:.3f} | **{m.get('others', float('nan')):.3f}** | |")
    for r in results:
        if r["target"] is None:
            continue
        goal, cfg = TARGETS[r["target"]], next(c for n, c in configs if n == r["name"])
        fits, size = budget_ok(r["target"], with_voices(cfg)[0])
        verdict = {k: r["mean"].get(k, float("nan")) >= v for k, v in goal.items()}
        r |= {"budget": size, "fits": fits, "met": verdict}
        shown = ", ".join(
            f"{k} {r['mean'].get(k, float('nan')):.3f} vs >= {v} ({'met' if verdict[k] else 'NOT met'})" for k, v in goal.items()
        )
        print(f"\n{r['target']} target: {shown}; budget {'kept' if fits else 'EXCEEDED'}: {size}; before: {BEFORE[r['target']]}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The result of a search: `python -m search.export RUN_DIR` (run by search.run at its end, on
Ctrl-C and when the time budget runs out).

Collects every finished trial, keeps the feasible non-dominated ones (ranked accuracy against the
budgeted bytes), makes each deployable under the run's protocol and checks it with the numpy
reference (search.front), then writes the artifacts, pareto.csv, pareto.json, pareto.png and, for
the speaker protocol, the winner's confusion.png (search.report). The new front is built beside
the old one and swapped in at the end: an export that fails half-way leaves the old one as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsdd.corpora import parse_data_dir
from fsdd.errors import ArgumentParser, Error, path_arg, run_cli
from fsdd.files import write_json
from search import report, runfolder
from search.front import choose, make_deployable
from search.protocol import protocol_for
from search.selection import winner


def _old_front_size(run_dir: Path) -> int:
    """Members of the front exported before: those pareto.json lists, or the artifacts there are."""
    try:
        listed = len(json.loads((run_dir / "pareto.json").read_text())["front"])
    except (OSError, ValueError, TypeError, KeyError):
        listed = 0
    return max(listed, len(list((run_dir / "artifacts").glob("*.safetensors"))))


def export(run_dir: str | Path, data: Any = None, cache_dir: str | None = None, workers: int | None = None) -> dict[str, Any]:
    """Build the run's exported front; its summary (also pareto.json). `data`: the corpora (default:
    the run's). Error in one line if the run cannot be exported (not a run, trials gone, in use by
    another process); never replaces a front with an empty one it could not rebuild."""
    run_dir = Path(run_dir)
    settings = runfolder.settings(run_dir)
    runfolder.hold(run_dir)  # refused while a search or another export works on the run (a no-op inside search.run)
    protocol = protocol_for(settings.base)
    records = runfolder.records(run_dir)
    data = data or settings.corpora
    cache_dir = cache_dir or settings.cache_dir
    front = choose(records, settings.budget)
    members = make_deployable(front, run_dir, data, cache_dir, workers or settings.cpus_per_trial)
    art_dir = run_dir / ".artifacts.new"
    shutil.rmtree(art_dir, ignore_errors=True)
    art_dir.mkdir()
    try:
        rows = []
        for rank, m in enumerate(members):
            stem = f"{rank:02d}-{m.record.quant}-h{m.record.config.model.hidden_size}-{m.record.size_bytes}B"
            artifact = art_dir / f"{stem}.safetensors"
            shutil.copyfile(m.folder / "model.safetensors", artifact)
            shutil.copyfile(m.folder / "predictions.json", art_dir / f"{stem}.predictions.json")
            rows.append(report.row(rank, m, artifact, run_dir, protocol) | {"artifact": f"artifacts/{artifact.name}"})
        if not rows and _old_front_size(run_dir) > 0:
            raise Error(
                f"{run_dir / 'trials'}: no finished trial within the budget can be read or exported ({len(records)} records), "
                "but the run's exported front has members: kept as it was"
            )
        best = winner(rows)
        summary = {
            "name": settings.name,
            "protocol": protocol.name,
            "test_speaker": settings.base.train.test_speaker,
            "budget_bytes": settings.budget.bytes,
            "budget_on": settings.budget.on,
            "trials_finished": len(records),
            "front": rows,
            "winner": best,
        }
        # Figures first (the step most likely to fail on odd data), beside the new artifacts.
        figures = {"pareto.png": art_dir / ".pareto.png"}
        report.plot(figures["pareto.png"], report.all_points(run_dir), rows, settings.budget, protocol)
        if best is not None and best.get("folds"):  # held-out speakers: each one's confusion matrix
            figures["confusion.png"] = art_dir / ".confusion.png"
            report.plot_confusions(figures["confusion.png"], best)
        write_json(run_dir / "pareto.json", summary)
        report.write_csv(run_dir / "pareto.csv", rows)
        for name, made in figures.items():
            os.replace(made, run_dir / name)
        shutil.rmtree(run_dir / "artifacts", ignore_errors=True)
        art_dir.rename(run_dir / "artifacts")
    finally:
        shutil.rmtree(art_dir, ignore_errors=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    p = ArgumentParser(prog="python -m search.export", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=path_arg)
    p.add_argument("--data-dir", action="append", type=parse_data_dir, metavar="[NAME=]PATH", help="the corpora (default: the run's)")
    p.add_argument("--cache-dir", type=path_arg)
    args = p.parse_args(argv)
    data = tuple(args.data_dir) if args.data_dir else None
    summary = export(args.run_dir, data, args.cache_dir)
    report.print_summary(summary, Path(args.run_dir), protocol_for(runfolder.settings(Path(args.run_dir)).base))
    return 0


if __name__ == "__main__":
    sys.exit(main())

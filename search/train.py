"""One training run: `python -m search.train --config configs/baseline.yaml`.

Trains (and prunes / quantizes) one configuration under its protocol (search.protocol): on a
single split it selects the epoch on validation, exports the artifact, measures test accuracy
once and prints a JSON line last; with `--split speakers` it trains every held-out-speaker fold
and prints the per-speaker table, then the JSON line.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fsdd.corpora import parse_data_dir
from fsdd.download import resolve_data_dir
from fsdd.errors import ArgumentParser, Error, path_arg, run_cli
from fsdd.files import current_umask, write_json
from fsdd.schema import SPEAKERS
from search.fit import quiet, with_voices
from search.protocol import run_one
from search.schema import load_config

# What a training run writes into its --out folder: all that --force may replace.
OUTPUTS = ("result.json", "predictions.json", "model.safetensors", "weights.safetensors", "hparams.yaml")


def _foreign(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS and not p.name.startswith("events.out.tfevents."))


def publish(staging: Path, out: Path, force: bool) -> None:
    """Put a finished run (`staging`, beside `out`) in place as `out`. A used `out` is replaced only
    with `force`, and only if it holds nothing but a training run's own outputs: two runs never
    merge into one folder (their TensorBoard curves would read as one)."""
    if out.exists():
        if not out.is_dir():
            raise Error(f"--out {out} exists and is not a folder")
        if any(out.iterdir()):
            if not force:
                raise Error(f"--out {out} already holds a run: pass --force to replace it, or choose another --out")
            foreign = _foreign(out)
            if foreign:
                raise Error(f"--out {out} holds {foreign[0]!r}, which a training run does not write: --force replaces only a run's folder")
        shutil.rmtree(out)
    staging.rename(out)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    p = ArgumentParser(prog="python -m search.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=path_arg, default="configs/baseline.yaml", help="YAML config (default: %(default)s)")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--split", help=f"override train.split: random | official | speaker:NAME | loso:NAME | all | {SPEAKERS} (every fold)")
    p.add_argument("--test-speaker", help="override train.test_speaker: a speaker kept out of everything")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument(
        "--data-dir",
        action="append",
        type=parse_data_dir,
        metavar="[NAME=]PATH",
        help="a recordings folder; give it several times for several corpora (default: $FSDD_DIR, else download)",
    )
    p.add_argument("--cache-dir", type=path_arg, help="feature/parent cache (default: $FSDD_CACHE or ~/.cache/fsdd)")
    p.add_argument("--no-synthetic-voices", action="store_true", help="train without the config's synthetic voices (voices.synth)")
    p.add_argument("--out", type=path_arg, help="output folder (default: runs/train/<config>-seed<N>); must be new or empty")
    p.add_argument("--force", action="store_true", help="replace an --out that holds an earlier run")
    args = p.parse_args(argv)
    quiet()
    cfg = load_config(args.config)
    pairs = (("seed", args.seed), ("split", args.split), ("epochs", args.epochs), ("test_speaker", args.test_speaker))
    overrides = {k: v for k, v in pairs if v is not None}
    if overrides:
        cfg = cfg.replace(train=overrides)
    cfg, note = with_voices(cfg, args.no_synthetic_voices)
    if note:
        print(f"note: {note}", file=sys.stderr)
    data = args.data_dir or resolve_data_dir(None)
    tag = "speakers-" if cfg.train.split == SPEAKERS else ""  # the default folder names the protocol, as before
    out = Path(args.out or f"runs/train/{Path(args.config).stem}-{tag}seed{cfg.train.seed}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise Error(f"--out {out} already holds a run: pass --force to replace it, or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp's 0700: the run folder gets a new folder's permissions
    try:
        result, text = run_one(cfg, data, staging, args.cache_dir)
        if result.get("artifact"):
            result["artifact"] = str(out / Path(result["artifact"]).name)
        write_json(staging / "result.json", result, indent=2)
        publish(staging, out, args.force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if text:
        print(text)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How many voices do I need? Held-out accuracy against the number of real training speakers.

Trains one configuration on FSDD's speakers but one, plus N speakers of `--others` (a folder of
speakers recorded elsewhere), with and without the configuration's synthetic voices, and scores
it on the FSDD speaker held out and on the others' speakers it did not train on. N runs over
`--counts` (0 is FSDD's five alone); the N speakers are the first N of a permutation of the
others' speakers drawn from `--seed`, so each larger set holds the smaller. This is the only
place where `--others` trains: everywhere else it only scores (its terms: no licence is stated).
Prints a Markdown table, then one JSON line.

Usage: FSDD_DIR=... python bench/how_many_voices.py --others ../shared/voices/agrim9 --config configs/new-voices-36k.yaml
           [--counts 0 4 8 12] [--held george jackson nicolas] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from fsdd.audio import list_wavs
from fsdd.download import resolve_data_dir
from fsdd.schema import Corpus
from fsdd.splits import clip_speaker
from search.fit import make_datamodule, quiet, save, test, train, with_voices
from search.schema import Config, load_config
from search.verify import verify


def subset(src: Path, speakers: set[str], folder: Path) -> Path:
    """A folder of links to the clips of `speakers` in `src`."""
    folder.mkdir(parents=True)
    for f in list_wavs(src):
        if clip_speaker(f.name) in speakers:
            (folder / f.name).symlink_to(f.resolve())
    return folder


def one(cfg: Config, fsdd: Path, others: Path, train_on: list[str], rest: list[str], held: str, tmp: Path, cache: str | None) -> dict:
    """Train on FSDD but `held` plus the others' `train_on`; accuracy on `held` and on the others' `rest`."""
    corpora = [Corpus("fsdd", str(fsdd))]
    if train_on:
        corpora.append(Corpus("others", str(subset(others, set(train_on), tmp / "train"))))
    split = f"loso:fsdd/{held}" if train_on else f"loso:{held}"
    c = cfg.replace(train={"split": split, "test_speaker": None})
    dm = make_datamodule(c, corpora, cache)
    net, _, _ = train(c, dm, None, (), cache)
    row = {"fsdd_held": test(c, net, dm, tmp)}
    got = verify(save(c, net, dm, tmp), [Corpus("rest", str(subset(others, set(rest), tmp / "rest")))], split="eval")
    return row | {"others_rest": got["test_acc"], "others_rest_worst": min(got["speakers"].values())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--others", type=Path, required=True, help="a folder of other speakers (e.g. ../shared/voices/agrim9)")
    p.add_argument("--config", default="configs/new-voices-36k.yaml")
    p.add_argument("--counts", type=int, nargs="+", default=[0, 4, 8, 12])
    p.add_argument("--held", nargs="+", default=["george", "jackson", "nicolas"], help="FSDD speakers held out, one run each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--cache-dir")
    args = p.parse_args()
    quiet()
    fsdd = resolve_data_dir(args.data_dir)
    speakers = sorted({clip_speaker(f.name) for f in list_wavs(args.others)})
    order = [speakers[i] for i in np.random.default_rng(args.seed).permutation(len(speakers))]
    base = load_config(args.config).replace(train={"seed": args.seed})
    with_synth, note = with_voices(base)
    if note:
        print(f"note: {note}", flush=True)
    kinds = [("with synthetic voices", with_synth)] if with_synth.voices.synth else []
    kinds.append(("without", with_voices(base, off=True)[0]))
    rows = []
    for n in args.counts:
        for kind, cfg in kinds:
            runs = []
            for held in args.held:
                with tempfile.TemporaryDirectory() as tmp:
                    runs.append(one(cfg, fsdd, args.others, order[:n], order[n:], held, Path(tmp), args.cache_dir))
                print(f"{n} others, {kind}, held out {held}: {runs[-1]}", flush=True)
            rows.append({"others_in_training": n, "speakers": 5 + n, "synthetic": kind, "runs": runs,
                         "fsdd_held": statistics.mean(r["fsdd_held"] for r in runs),
                         "others_rest": statistics.mean(r["others_rest"] for r in runs)})  # fmt: skip
    print(f"\n{args.config}, seed {args.seed}; FSDD held out: {', '.join(args.held)} (mean)")
    print(f"the others' speakers in training: the first N of {order}")
    print("| real training speakers | synthetic voices | FSDD held-out speaker | the others' remaining speakers |")
    print("|---|---|---|---|")
    for r in rows:
        rest = len(speakers) - r["others_in_training"]
        print(f"| 5 + {r['others_in_training']} | {r['synthetic']} | {r['fsdd_held']:.3f} | {r['others_rest']:.3f} ({rest} speakers) |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

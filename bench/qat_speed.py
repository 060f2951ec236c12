"""Training time of one epoch: float32 vs QAT (Brevitas weight quantizers on the fused LSTM).

    FSDD_DIR=../shared/fsdd/recordings python bench/qat_speed.py [--hidden 64]

All runs use search.fit.fit (Lightning, the project's DataModule), 1 thread, in one process.
Prints one JSON object with the median epoch time of each and its ratio to float32. (Brevitas's
QuantLSTM, 4-30x slower in the project's earlier measurements, is no longer a mode: its
quantizers cannot be exported.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from timing import EpochTimer  # noqa: E402

from fsdd.download import resolve_data_dir  # noqa: E402
from search.fit import fit, make_datamodule, quiet  # noqa: E402
from search.schema import from_dict  # noqa: E402

VARIANTS = {
    "fp32": ({"mode": "fp32"}, 5),
    "qat_fast_4bit_po2": ({"mode": "qat", "bits": 4, "scale": "po2", "warm_start": False}, 5),
    "qat_fast_8bit_float_per_channel": (
        {"mode": "qat", "bits": 8, "scale": "float", "per_channel": True, "warm_start": False},
        5,
    ),
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=64)
    args = p.parse_args()
    quiet()
    data_dir = resolve_data_dir(None)
    out: dict = {"hidden_size": args.hidden, "threads": 1}
    with tempfile.TemporaryDirectory() as cache:
        for name, (quant, epochs) in VARIANTS.items():
            cfg = from_dict({"model": {"hidden_size": args.hidden}, "train": {"epochs": epochs}, "quant": quant})
            dm = make_datamodule(cfg, data_dir, cache)
            timer = EpochTimer()
            fit(cfg, dm, callbacks=[timer])
            out[name] = {"epoch_s": round(timer.epoch_s(), 3)}
            print(name, out[name], file=sys.stderr, flush=True)
    for name in VARIANTS:
        out[name]["x_fp32"] = round(out[name]["epoch_s"] / out["fp32"]["epoch_s"], 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

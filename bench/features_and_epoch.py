"""Feature extraction (cold vs cached) and the cost of Lightning + the DataModule per epoch.

    FSDD_DIR=../shared/fsdd/recordings python bench/features_and_epoch.py

Prints one JSON object: cold and warm feature times for every clip, and at h=128 and h=32
the training time of one epoch with the project's DataModule + LightningModule next to a
bare nn.LSTM loop over the same batches in the same process (1 thread each), and their ratio.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from timing import EpochTimer  # noqa: E402

from fsdd.download import resolve_data_dir  # noqa: E402
from fsdd.features import load_features  # noqa: E402
from fsdd.schema import FeatureConfig  # noqa: E402
from search.fit import fit, make_datamodule, quiet  # noqa: E402
from search.model import PlainClassifier  # noqa: E402
from search.schema import from_dict  # noqa: E402

EPOCHS = 4


def bare_epoch_s(dm, hidden: int) -> float:
    """The same network as plain nn.LSTM + nn.Linear, Adam, over pre-built batches."""
    torch.manual_seed(0)
    batches = list(dm.train_dataloader())
    net = PlainClassifier(dm.features.n_mfcc, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    times = []
    for _ in range(EPOCHS):
        t0 = time.perf_counter()
        for x, lengths, y in batches:
            opt.zero_grad()
            F.cross_entropy(net(x, lengths), y).backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


def main() -> int:
    quiet()
    torch.set_num_threads(1)
    data_dir = resolve_data_dir(None)
    out: dict = {}
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        names, _ = load_features(data_dir, FeatureConfig(), cache)
        out["clips"] = len(names)
        out["features_cold_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        load_features(data_dir, FeatureConfig(), cache)
        out["features_warm_s"] = round(time.perf_counter() - t0, 3)
        for hidden in (128, 32):
            cfg = from_dict({"model": {"hidden_size": hidden}, "train": {"epochs": EPOCHS, "threads": 1}})
            dm = make_datamodule(cfg, data_dir, cache)
            timer = EpochTimer()
            fit(cfg, dm, callbacks=[timer])
            ours, bare = timer.epoch_s(), bare_epoch_s(dm, hidden)
            out[f"h{hidden}"] = {
                "lightning_epoch_s": round(ours, 3),
                "bare_epoch_s": round(bare, 3),
                "ratio": round(ours / bare, 2),
            }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

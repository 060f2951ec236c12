"""What the generated library stores for one model: its front end and its weight tensors, from
an artifact (`load`) or, before training, from a configuration alone (`from_config`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsdd.errors import DeployError
from search.artifact import read, validate
from search.deploy.frontend import FrontEnd, front_end
from search.schema import Config
from search.size import kept_after, layout, weight_shapes

MATRICES = ("lstm.weight_ih", "lstm.weight_hh", "fc.weight")


@dataclass(frozen=True)
class Matrix:
    """One stored weight matrix: the C names of its tensors (None where the mode has none)."""

    name: str  # layout name, e.g. "lstm.weight_ih"
    rows: int
    cols: int
    nnz: int
    values: str
    scale: str | None
    mask: str | None
    index: str | None
    index_size: int  # bytes per stored position (0 without index)


@dataclass(frozen=True)
class ModelSpec:
    """Everything the C library is generated from. `tensors` is empty for a spec made from a config."""

    cfg: Config
    front: FrontEnd
    quant: str  # fp32 | ptq_int8 | qat
    bits: int
    po2: bool
    per_channel: bool
    matrices: tuple[Matrix, ...]
    tensor_bytes: dict[str, int]  # C name -> bytes, in layout order (sum = size_bytes(cfg))
    tensors: dict[str, np.ndarray]  # C name -> array, in layout order

    @property
    def hidden(self) -> int:
        return self.cfg.model.hidden_size


def c_name(tensor: str) -> str:
    """C symbol of an artifact tensor: "lstm.weight_ih.q" -> "kws_w_lstm_weight_ih_q"."""
    return "kws_w_" + tensor.replace(".", "_")


def from_config(cfg: Config, tensors: dict[str, np.ndarray] | None = None, where: str = "config", transform: str = "auto") -> ModelSpec:
    """The spec of a configuration (tensors, if given, keyed by artifact tensor name); `transform`
    as frontend.front_end takes it."""
    front = front_end(cfg.features, where, transform)
    entries = layout(cfg)
    entry = {e.name: e for e in entries}
    empty = next((e.name for e in entries if e.nbytes == 0), None)
    if empty:
        raise DeployError(f"{where}: tensor {empty} is empty (the pruning schedule removes every weight of its matrix)")
    matrices = []
    for name, (rows, cols) in weight_shapes(cfg).items():
        values = next(n for n in (name, f"{name}.values", f"{name}.q") if n in entry)
        scale = next((n for n in (f"{name}.exp", f"{name}.scale") if n in entry), None)
        mask = f"{name}.mask" if f"{name}.mask" in entry else None
        index = f"{name}.index" if f"{name}.index" in entry else None
        nnz = kept_after(rows * cols, cfg.prune.schedule)  # = rows * cols when stored dense
        matrices.append(
            Matrix(
                name=name,
                rows=rows,
                cols=cols,
                nnz=nnz,
                values=c_name(values),
                scale=c_name(scale) if scale else None,
                mask=c_name(mask) if mask else None,
                index=c_name(index) if index else None,
                index_size=np.dtype(entry[index].dtype).itemsize if index else 0,
            )
        )
    q = cfg.quant
    return ModelSpec(
        cfg=cfg,
        front=front,
        quant=q.mode,
        bits={"fp32": 32, "ptq_int8": 8}.get(q.mode, q.bits),
        po2=q.mode == "qat" and q.scale == "po2",
        per_channel=q.mode == "qat" and q.per_channel,
        matrices=tuple(matrices),
        tensor_bytes={c_name(e.name): e.nbytes for e in entries},
        tensors={c_name(e.name): tensors[e.name] for e in entries} if tensors is not None else {},
    )


def read_artifact(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray], Config]:
    """Metadata, tensors and config of an artifact file, checked as search.verify checks it
    (search.artifact.validate); ArtifactError with one line otherwise."""
    meta, tensors = read(path)
    return meta, tensors, validate(meta, tensors, path)


def load(path: str | Path, transform: str = "auto") -> ModelSpec:
    """The spec of an artifact file, checked (read_artifact); DeployError with one line otherwise."""
    _, tensors, cfg = read_artifact(path)
    return from_config(cfg, tensors, where=str(path), transform=transform)

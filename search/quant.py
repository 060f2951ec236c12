"""Quantization: Brevitas weight quantizers for QAT, and PyTorch's dynamic int8 PTQ."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from brevitas.nn import QuantLinear
from brevitas.quant import Int8WeightPerTensorFixedPoint, Int8WeightPerTensorFloat
from torch import nn

from search.schema import QuantConfig


def _quantizer_class(q: QuantConfig) -> type:
    # Both are symmetric, narrow-range (integers in [-(2^(b-1)-1), 2^(b-1)-1], zero point 0),
    # with the scale taken from the weights' max-abs; FixedPoint rounds the scale up to 2^k.
    return Int8WeightPerTensorFixedPoint if q.scale == "po2" else Int8WeightPerTensorFloat


def _weight_kwargs(q: QuantConfig) -> dict:
    """Brevitas keyword arguments of our weight quantizer."""
    return {
        "weight_quant": _quantizer_class(q),
        "weight_bit_width": q.bits,
        "weight_scaling_per_output_channel": q.per_channel,
    }


def weight_quantizer(out_features: int, in_features: int, q: QuantConfig) -> nn.Module:
    """A Brevitas weight-quantizer proxy for a (out_features, in_features) weight.

    Brevitas builds its quantizers for a layer, so we build a QuantLinear of that shape and
    keep only its `weight_quant` proxy. The proxy computes its scale from the tensor it is
    given (stats scaling) and passes gradients straight through, and it holds no parameters.
    """
    layer = QuantLinear(
        in_features,
        out_features,
        bias=False,
        **_weight_kwargs(q),
    )
    return layer.weight_quant


def fake_quant(proxy: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """`w` fake-quantized by the Brevitas `proxy`, with a straight-through gradient to `w`.

    The forward value is Brevitas's exactly (`wq + (w - w)` adds an exact zero). The scale, a
    max-abs statistic of `w`, is a constant in the backward pass, as in PyTorch's own QAT
    observers: differentiating through Brevitas's graph of small ops cost more than the LSTM
    itself at these sizes (bench/qat_speed.py).
    """
    with torch.no_grad():
        wq = _traced(proxy, w)(w)[0]
    return wq + (w - w.detach())


def _traced(proxy: nn.Module, w: torch.Tensor) -> Callable[[torch.Tensor], tuple]:
    """The proxy's quantizer (`tensor_quant`: value, scale, zero point, bit width) traced into
    one TorchScript graph, once per weight shape and mode. The same ops, but one call instead
    of Brevitas's ~40 nested module calls: about 100 us instead of 290 us for a 256x64 weight.
    Falls back to the proxy itself if tracing fails or the traced graph disagrees with it."""
    cache = proxy.__dict__.setdefault("_traced", {})  # a plain attribute: not a submodule, no state
    key = (tuple(w.shape), proxy.training)
    if key not in cache:
        fn = proxy.tensor_quant
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notices
            try:
                traced = torch.jit.trace(fn, (w,), check_trace=False)
                probe = w * 1.7 + 0.01  # other values than the example: a graph that froze them would differ
                if torch.equal(traced(probe)[0], fn(probe)[0]) and torch.equal(traced(w)[0], fn(w)[0]):
                    fn = traced
            except Exception:  # noqa: BLE001 - any tracing failure: keep Brevitas's own module
                pass
        cache[key] = fn
    return cache[key]


def int_weights(proxy: nn.Module, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes and scales (shape (1,) or (rows,)) with w_q = codes * scale exactly."""
    with torch.no_grad():
        qt = proxy(w)
        scale = qt.scale.detach().reshape(-1)
        codes = torch.round(qt.value / qt.scale).to(torch.int8)
    return codes, scale


def dynamic_int8(model: nn.Module) -> nn.Module:
    """PyTorch's native post-training dynamic int8 quantization of nn.LSTM and nn.Linear:
    int8 per-tensor symmetric weights; activations quantized on the fly at run time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice points to torchao
        return torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=torch.qint8)

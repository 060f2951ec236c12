"""Quantizers: bit widths, power-of-two scales, gradients, warm start, PyTorch dynamic int8."""

from __future__ import annotations

import pytest
import torch

from search.fit import warm_start
from search.model import LSTMClassifier, PlainClassifier, build_model
from search.quant import dynamic_int8, fake_quant, int_weights, weight_quantizer
from search.schema import QuantConfig, from_dict


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("scale", ["float", "po2"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_quantizer_codes_and_scales(bits, scale, per_channel):
    w = torch.randn(12, 5, requires_grad=True)
    proxy = weight_quantizer(12, 5, QuantConfig(mode="qat", bits=bits, scale=scale, per_channel=per_channel))
    codes, s = int_weights(proxy, w)
    lim = 2 ** (bits - 1) - 1
    assert codes.abs().max() <= lim  # symmetric, narrow range
    assert s.numel() == (12 if per_channel else 1)
    if scale == "po2":
        assert torch.all(torch.log2(s) == torch.round(torch.log2(s)))
    fq = proxy(w).value
    torch.testing.assert_close(fq, codes.float() * (s.reshape(-1, 1) if per_channel else s), rtol=0, atol=0)
    fq.sum().backward()  # straight-through estimator: gradients reach the float weights
    assert w.grad is not None and w.grad.abs().sum() > 0


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("scale", ["float", "po2"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fake_quant_is_brevitas_forward_with_straight_through_gradient(bits, scale, per_channel):
    proxy = weight_quantizer(24, 7, QuantConfig(mode="qat", bits=bits, scale=scale, per_channel=per_channel))
    w = torch.randn(24, 7, requires_grad=True)
    for step in range(3):  # new values each call, as in training: the traced graph must not freeze them
        with torch.no_grad():
            w.mul_(1.5).add_(0.1 * step)
        fq = fake_quant(proxy, w)
        assert torch.equal(fq, proxy(w).value)  # bit for bit Brevitas's value
        g = torch.randn(24, 7)
        w.grad = None
        fq.backward(g)
        assert torch.equal(w.grad, g)  # straight through: the scale is a constant
    # The fast traced graph is in use (not the fallback to Brevitas's module).
    assert all(isinstance(fn, torch.jit.ScriptModule | torch.jit.ScriptFunction) for fn in proxy._traced.values())


def test_qat_forward_uses_quantized_weights():
    q = QuantConfig(mode="qat", bits=2, scale="po2")
    net = LSTMClassifier(4, 6, q)
    w_ih, _ = net.lstm.effective_weights()
    assert len(torch.unique(w_ih)) <= 3  # 2 bits: -s, 0, s
    x, lengths = torch.randn(2, 5, 4), torch.tensor([5, 3])
    out = net(x, lengths)
    net.lstm.wq_ih = net.lstm.wq_hh = net.fc.wq = None  # same weights without quantization
    assert not torch.allclose(out, net(x, lengths))


def test_warm_start_loads_float_parent_into_both_qat_paths():
    parent = build_model(from_dict({"model": {"hidden_size": 6}, "features": {"n_mfcc": 4}}))
    state = parent.state_dict()
    x, lengths = torch.randn(2, 5, 4), torch.tensor([5, 3])
    for impl in ("fast", "quantlstm"):
        child = LSTMClassifier(4, 6, QuantConfig(mode="qat", bits=8, scale="float", impl=impl))
        warm_start(child, state)
        # 8-bit weights and (fast path) float activations: close to the parent's output.
        torch.testing.assert_close(child(x, lengths), parent(x, lengths), atol=0.05, rtol=0)


def test_pytorch_dynamic_int8_still_exists():
    # Guards the day torch.ao's dynamic quantization disappears: a red test, not a silent change.
    plain = PlainClassifier(4, 6).eval()
    qmodel = dynamic_int8(plain)
    assert type(qmodel.lstm).__module__.startswith("torch.ao.nn.quantized.dynamic")
    w = qmodel.lstm._weight_bias()["weight"]["weight_ih_l0"]
    assert w.dtype == torch.qint8 and w.q_zero_point() == 0
    x, lengths = torch.randn(2, 5, 4), torch.tensor([5, 3])
    torch.testing.assert_close(qmodel(x, lengths), plain(x, lengths), atol=0.05, rtol=0)

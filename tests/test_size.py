"""size_bytes(cfg) is the artifact's payload, for every mode and many random configurations."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search import artifact
from search.fit import model_weights
from search.model import build_model
from search.prune import pruned_tensors, pruning_callback
from search.schema import from_dict
from search.size import KIB, kept_after, size_bytes, size_bytes_study, sparse_encoding, sparsity

STUDY_SCHEDULE = [[10, 0.5], [20, 0.25], {"from": 30, "to": 50, "rate": 0.01}]


def export_random(cfg, tmp_path) -> tuple[int, dict, dict]:
    """Export an untrained network of `cfg` (pruned by the real callback) and decode it again."""
    torch.manual_seed(0)
    net = build_model(cfg)
    cb = pruning_callback(net, cfg.prune)
    if cb is not None:
        for epoch, _ in cfg.prune.schedule:
            cb._run_pruning(epoch)
        cb.make_pruning_permanent(net)
    floats, biases, codes = model_weights(cfg, net)
    i = cfg.features.n_mfcc
    tensors = artifact.build_payload(cfg, floats, biases, (np.zeros(i), np.ones(i)), codes)
    path = tmp_path / "m.safetensors"
    written = artifact.write(path, tensors, artifact.metadata(cfg, "abc", 0, [{"name": "fsdd", "clips": 1}]))
    meta, t = artifact.read(path)
    return written, artifact.dense_weights(meta, t), {"net": net, "floats": floats, "codes": codes}


modes = st.sampled_from(
    [
        {"mode": "fp32"},
        {"mode": "ptq_int8"},
        *({"mode": "qat", "bits": b, "scale": s, "per_channel": pc} for b in range(2, 9) for s in ("float", "po2") for pc in (False, True)),
    ]
)
schedules = st.one_of(
    st.just([]),
    st.lists(st.floats(0.01, 0.95), min_size=1, max_size=4).map(lambda rs: [[e, r] for e, r in enumerate(rs)]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(quant=modes, schedule=schedules, hidden=st.integers(1, 40), n_mfcc=st.integers(1, 20))
def test_size_equals_payload_and_decodes_exactly(tmp_path, quant, schedule, hidden, n_mfcc):
    cfg = from_dict(
        {
            "model": {"hidden_size": hidden},
            "features": {"n_mfcc": n_mfcc},
            "train": {"epochs": 8},
            "prune": {"schedule": schedule},
            "quant": quant,
        }
    )
    written, dense, src = export_random(cfg, tmp_path)
    assert written == size_bytes(cfg)
    # The decoded weights are exactly the deployed ones: masked zeros stay zero, codes * scale.
    for name, w in src["floats"].items():
        assert int((dense[name] != 0).sum()) <= kept_after(w.size, cfg.prune.schedule)
        assert np.all(dense[name][w == 0] == 0)
        if cfg.quant.mode == "fp32":
            np.testing.assert_array_equal(dense[name], w)
        else:
            codes, scale = src["codes"][name]
            scale = scale.reshape(-1, 1) if scale.size > 1 else scale.reshape(1, 1)
            want = np.where(w != 0, codes.astype(np.float32) * scale.astype(np.float32), 0)
            np.testing.assert_array_equal(dense[name], want)


def test_qat_decoded_weights_are_the_trained_forward_weights(tmp_path):
    cfg = from_dict({"model": {"hidden_size": 6}, "quant": {"mode": "qat", "bits": 3, "scale": "po2", "per_channel": True}})
    _, dense, src = export_random(cfg, tmp_path)
    w_ih, w_hh = src["net"].lstm.effective_weights()
    np.testing.assert_array_equal(dense["lstm.weight_ih"], w_ih.detach().numpy())
    np.testing.assert_array_equal(dense["lstm.weight_hh"], w_hh.detach().numpy())
    np.testing.assert_array_equal(dense["fc.weight"], src["net"].fc.effective_weight().detach().numpy())
    assert np.all(np.log2(np.exp2(artifact.read(tmp_path / "m.safetensors")[1]["lstm.weight_ih.exp"])) % 1 == 0)


def test_study_figures():
    pruned = from_dict({"model": {"hidden_size": 72}, "train": {"epochs": 60}, "prune": {"schedule": STUDY_SCHEDULE}})
    assert abs(sparsity(pruned) - (1 - 0.5 * 0.75 * 0.99**21)) < 1e-3
    assert size_bytes(pruned) <= 36 * KIB  # the study's pruned model fits 36 KiB honestly
    dense72 = from_dict({"model": {"hidden_size": 72}})
    assert size_bytes_study(dense72) == 25786 * 4  # the study's 100.7 KiB


def test_sparse_encoding_picks_the_smaller():
    assert sparse_encoding(1000, 1000) is None
    assert sparse_encoding(1000, 900).name == "mask"  # 125 B < 1800 B of uint16 indices
    enc = sparse_encoding(1000, 10)
    assert enc.name == "index" and enc.dtype == "uint16" and enc.nbytes == 20
    assert sparse_encoding(200, 5).dtype == "uint8"


def test_pack_bits_roundtrip():
    rng = np.random.default_rng(0)
    for bits in range(2, 9):
        lim = 2 ** (bits - 1) - 1
        codes = rng.integers(-lim, lim + 1, size=37)
        packed = artifact.pack_bits(codes, bits)
        assert len(packed) == (37 * bits + 7) // 8
        np.testing.assert_array_equal(artifact.unpack_bits(packed, bits, 37), codes)
    # LSB first: codes 1, -1 at 4 bits -> byte 0b1111_0001
    assert artifact.pack_bits(np.array([1, -1]), 4).tolist() == [0xF1]


def test_pruning_masks_apply_in_forward():
    cfg = from_dict({"model": {"hidden_size": 8}, "features": {"n_mfcc": 5}, "prune": {"schedule": [[0, 0.6]]}})
    net = build_model(cfg)
    cb = pruning_callback(net, cfg.prune)
    cb._run_pruning(0)
    x, lengths = torch.randn(3, 7, 5), torch.tensor([7, 4, 2])
    out = net(x, lengths)
    # Changing the (masked) original values of pruned weights must not change the output.
    for module, name in pruned_tensors(net):
        orig, mask = getattr(module, name + "_orig"), getattr(module, name + "_mask")
        with torch.no_grad():
            orig[mask == 0] = 100.0
        assert (mask == 0).sum() == round(0.6 * mask.numel())
    torch.testing.assert_close(net(x, lengths), out)
    # And the output equals a plain network holding the masked weights.
    plain = build_model(cfg)
    with torch.no_grad():
        for (m, n), (pm, pn) in zip(pruned_tensors(net), pruned_tensors(plain), strict=True):
            getattr(pm, pn).copy_(getattr(m, n + "_orig") * getattr(m, n + "_mask"))
        plain.lstm.bias_ih_l0.copy_(net.lstm.bias_ih_l0)
        plain.lstm.bias_hh_l0.copy_(net.lstm.bias_hh_l0)
        plain.fc.bias.copy_(net.fc.bias)
    torch.testing.assert_close(plain(x, lengths), out)

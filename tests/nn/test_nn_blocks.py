import torch

from sermo.nn.layers import LayerWeighting, Standardize
from sermo.nn.losses import ccc_loss, ccc_per_dim, masked_cross_entropy
from sermo.nn.pooling import MeanMaxPool, SelfAttentivePool, last_valid, masked_max, masked_mean


def test_pooling_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[-2.0], [-4.0], [-6.0]]])  # (B=2, T=3, D=1)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert masked_mean(x, mask).squeeze(-1).tolist() == [2.0, -4.0]
    assert masked_max(x, mask).squeeze(-1).tolist() == [3.0, -2.0]
    assert MeanMaxPool()(x, mask).shape == (2, 2)
    assert last_valid(x, mask).squeeze(-1).tolist() == [3.0, -6.0]
    torch.manual_seed(0)
    pool = SelfAttentivePool(1, hidden=4)
    a = pool(x, mask)
    assert pool.attention[0, 2] == 0 and torch.allclose(pool.attention.sum(1), torch.ones(2))
    x2 = x.clone()
    x2[0, 2] = -999.0  # changing a padded frame changes nothing
    assert torch.allclose(pool(x2, mask), a)


def test_layer_weights_sum_to_one():
    for mode in ("softmax", "normalized"):
        lw = LayerWeighting(5, mode)
        with torch.no_grad():
            lw.raw.copy_(torch.tensor([0.1, 2.0, 0.5, 1.0, 3.0]))
        assert torch.isclose(lw.weights().sum(), torch.tensor(1.0))
        x = torch.randn(2, 5, 4, 3)
        assert lw(x).shape == (2, 4, 3)


def test_standardized_mix_is_the_weighting_of_standardised_layers():
    torch.manual_seed(0)
    for layers, mode in ((5, "softmax"), (1, "softmax"), (3, "normalized")):
        lw, norm = LayerWeighting(layers, mode), Standardize(layers, 4)
        norm.set(torch.randn(layers, 4), torch.rand(layers, 4) + 0.5)
        with torch.no_grad():
            lw.raw.add_(torch.randn(layers))
        x = torch.randn(2, layers, 6, 4)
        mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
        fused = lw.standardized(x, norm, mask)
        plain = lw(norm(x, mask))
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
        assert fused[1, 4:].abs().sum() == 0  # padding stays zero
        if layers == 1:
            continue
        (g_fused,) = torch.autograd.grad(fused.square().sum(), lw.raw)
        (g_plain,) = torch.autograd.grad(lw(norm(x, mask)).square().sum(), lw.raw)
        torch.testing.assert_close(g_fused, g_plain, rtol=1e-4, atol=1e-5)


def test_ccc_loss_masks_missing_labels():
    pred = torch.tensor([[0.1, 0.5, 0.2], [0.4, 0.1, 0.9], [0.8, 0.7, 0.3]])
    target = pred.clone()
    target[:, 2] = float("nan")  # a corpus without dominance labels
    assert torch.allclose(ccc_per_dim(pred, target)[:2], torch.ones(2), atol=1e-5)
    assert ccc_loss(pred, target).item() < 1e-5
    assert torch.isfinite(ccc_loss(pred, torch.full_like(pred, float("nan"))))
    logits = torch.randn(3, 4, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.tensor([-1, 2, -1]))
    loss.backward()
    assert logits.grad[0].abs().sum() == 0 and logits.grad[1].abs().sum() > 0
    assert masked_cross_entropy(logits, torch.tensor([-1, -1, -1])).item() == 0.0


def test_standardize_uses_stats():
    s = Standardize(1, 2)
    s.set([[1.0, 2.0]], [[2.0, 4.0]])
    x = torch.tensor([[[[3.0, 6.0]]]])
    assert s(x).flatten().tolist() == [1.0, 1.0]


def test_gru_last_output_ignores_right_padding():
    from sermo.nn.layers import GRUEncoder

    torch.manual_seed(0)
    gru = GRUEncoder(3, hidden=5, layers=2)
    x = torch.randn(1, 4, 3)
    alone, _ = gru(x, torch.ones(1, 4, dtype=torch.bool))
    padded = torch.cat([x, torch.randn(1, 6, 3) * 100], dim=1)
    mask = torch.tensor([[True] * 4 + [False] * 6])
    with_pad, _ = gru(padded, mask)
    assert torch.allclose(alone, with_pad, atol=1e-6)


def test_conformer_and_frame_averaging_ignore_padding():
    from sermo.nn.layers import Conformer, average_frames

    torch.manual_seed(0)
    conf = Conformer(5, hidden=8, layers=2, heads=2, kernel=3).eval()
    x = torch.randn(2, 10, 5)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    y = conf(x, mask)
    x2 = x.clone()
    x2[1, 6:] = 99.0
    assert torch.allclose(conf(x2, mask)[1, :6], y[1, :6], atol=1e-5) and y[1, 6:].abs().sum() == 0
    avg, m = average_frames(x, mask, 4)
    assert avg.shape == (2, 3, 5) and m[1].tolist() == [True, True, False]
    assert torch.allclose(avg[1, 1], x[1, 4:6].mean(0))


def test_conformer_attention_knows_the_order_of_frames():
    # ESPnet's conformer (paper 002's encoder) attends with relative positional encodings; without
    # them, and with a convolution that sees one frame (kernel 1), a conformer is permutation-
    # equivariant: a reversed utterance would give the reversed frames, and the same pooled vector
    from sermo.nn.layers import Conformer

    torch.manual_seed(0)
    conf = Conformer(5, hidden=8, layers=2, heads=2, kernel=1).eval()
    x = torch.randn(1, 12, 5)
    mask = torch.ones(1, 12, dtype=torch.bool)
    y, y_rev = conf(x, mask), conf(x.flip(1), mask)
    gap = (y.flip(1) - y_rev).abs().mean() / y.abs().mean()
    assert gap > 5e-3, gap  # without positions: ~1e-7 (float rounding)
    # padding still changes nothing where the utterance is (distances, not absolute positions)
    padded = torch.cat([x, torch.randn(1, 5, 5)], dim=1)
    pmask = torch.cat([mask, torch.zeros(1, 5, dtype=torch.bool)], dim=1)
    assert torch.allclose(conf(padded, pmask)[:, :12], y, atol=1e-5)


def test_standardized_mix_keeps_its_precision_under_bf16_autocast():
    # features whose mean is 500 standard deviations: rounded to bfloat16 before the mean is
    # taken off (the fused einsum under autocast), the signal of unit size is lost entirely
    torch.manual_seed(0)
    lw, norm = LayerWeighting(3), Standardize(3, 4)
    norm.set(torch.full((3, 4), 500.0), torch.ones(3, 4))
    x = 500.0 + torch.randn(2, 3, 6, 4)
    mask = torch.ones(2, 6, dtype=torch.bool)
    plain = lw(norm(x, mask))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = lw.standardized(x, norm, mask)
    assert mixed.dtype == torch.float32
    assert float((mixed - plain).abs().max().detach()) < 1e-3  # before: errors of ~1, the signal's own size

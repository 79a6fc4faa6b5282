"""The baselines' linear probe: pooled statistics, fitted heads folded into a module."""

import numpy as np
import torch

from sermo.data.batch import Batch
from sermo.nn.probe import LinearProbe
from sermo.systems.baselines import BaselinesConfig, LinearRow, fit_linear


def test_pooling_is_the_per_layer_mean_and_std_of_real_frames():
    probe = LinearProbe(2, 3, 4)
    x = torch.randn(2, 2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    f = probe.pooled(x, mask)
    assert f.shape == (2, 2 * 2 * 3)
    first = x[0, :, :3]  # (L, 3 real frames, D)
    assert torch.allclose(f[0, :6], first.mean(1).reshape(-1), atol=1e-5)
    assert torch.allclose(f[0, 6:], first.std(1, unbiased=False).reshape(-1), atol=1e-4)


def test_fitted_heads_predict_what_the_regressions_learned():
    rng = np.random.default_rng(0)
    n, w = 300, 8
    scale, offset = rng.uniform(0.5, 20, size=w), rng.normal(size=w) * 5  # far from standardised

    def split(k):
        z = rng.normal(size=(k, w))
        x = z * scale + offset
        cls = (z[:, 0] > 0).astype(int) + 2 * (z[:, 1] > 0).astype(int)
        cls[:10] = -1  # unlabelled
        dims = np.stack([0.5 + 0.1 * z[:, 2], 0.5 - 0.1 * z[:, 3], np.full(k, np.nan)], 1)
        return x, dims, cls

    train, valid = split(n), split(100)
    probe = LinearProbe(1, w // 2, 5)  # 5 classes in the space; class 4 never seen in training
    info = fit_linear(probe, train, valid, BaselinesConfig())
    assert info["linear_c"] in BaselinesConfig().linear_c and info["linear_alpha"][2] is None
    x = torch.as_tensor(valid[0], dtype=torch.float32)
    logits, dims = probe.cls_head(x), probe.dims_head(x)
    pred = logits.argmax(1).numpy()
    labelled = valid[2] >= 0
    assert (pred[labelled] == valid[2][labelled]).mean() > 0.8 and (pred != 4).all()
    assert np.corrcoef(dims[:, 0].detach().numpy(), valid[1][:, 0])[0, 1] > 0.9


def test_a_linear_row_reads_its_modality_and_trains_a_step():
    row = LinearRow("text", 2, 4, 3, ["dims", "category"])
    b = Batch(ids=["a", "b"], audio=None, audio_mask=None, text=torch.randn(2, 2, 6, 4),
              text_mask=torch.ones(2, 6, dtype=torch.bool), dims=torch.rand(2, 3),
              category=torch.tensor([0, 2]))
    out = row(b)
    assert out.dims.shape == (2, 3) and out.logits.shape == (2, 3)
    row.losses(out, b)["loss"].backward()
    assert row.probe.cls_head.weight.grad is not None


def test_balanced_class_weights_make_each_class_count_the_same():
    from sermo.nn.losses import masked_cross_entropy
    from sermo.systems.baselines import balanced_weights

    classes = np.array([0] * 6 + [1] * 2 + [-1] * 3)
    w = balanced_weights(classes, 3)
    assert np.allclose(w, [8 / 12, 8 / 4, 1.0])
    assert np.isclose((w[classes[classes >= 0]]).sum() / 2, (w[0] * 6 + w[1] * 2) / 2)
    assert np.isclose(w[0] * 6, w[1] * 2)  # the two present classes weigh the same in total
    logits = torch.zeros(4, 3, requires_grad=True)
    target = torch.tensor([0, 0, 1, -1])
    plain = masked_cross_entropy(logits, target)
    weighted = masked_cross_entropy(logits, target, torch.as_tensor(w))
    assert torch.isclose(plain, weighted)  # uniform logits: the same loss whatever the weights

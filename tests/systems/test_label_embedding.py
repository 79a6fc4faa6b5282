import torch

from sermo.data.batch import Batch
from sermo.systems.label_embedding import (LEMER, LabelEmbeddingConfig, attention_constraint, cross_attention,
                                           label_scores, tfidf_top_k)

CFG = LabelEmbeddingConfig(dim=8, dropout=0.0)


def test_tfidf_picks_each_class_its_own_words_and_units():
    docs = [[["i", "am", "so", "happy"], ["happy", "day", "i", "am"]],
            [["i", "am", "so", "angry"], ["angry", "shout", "i"]],
            [["i", "feel", "sad"], ["sad", "sad", "am"]]]
    top = tfidf_top_k(docs, 1)
    assert top == [["happy"], ["angry"], ["sad"]]
    assert tfidf_top_k(docs, 3, stop={"happy"})[0][0] != "happy"
    units = [[[1, 1, 7, 0], [1, 7, 0]], [[2, 2, 0], [2, 0, 9]]]  # unit 0 everywhere (silence)
    got = tfidf_top_k(units, 1)
    assert got == [[1], [2]]


def batch(n=2, tt=5, ts=7, dt=6, ds=4):
    g = torch.Generator().manual_seed(0)
    t_mask = torch.ones(n, tt, dtype=torch.bool)
    t_mask[0, 3:] = False
    s_mask = torch.ones(n, ts, dtype=torch.bool)
    s_mask[1, 4:] = False
    return Batch(ids=["a", "b"][:n], dims=torch.full((n, 3), float("nan")), category=torch.tensor([0, 2][:n]),
                 audio=torch.randn(n, 1, ts, ds, generator=g), audio_mask=s_mask,
                 text=torch.randn(n, 1, tt, dt, generator=g), text_mask=t_mask)


def test_shapes_and_padding():
    b = batch()
    model = LEMER(text=(1, 6), speech=(1, 4), num_classes=3, cfg=CFG, fusion="constraint",
                  text_labels=torch.randn(3, 6), speech_labels=torch.randn(3, 4))
    out = model(b)
    ex = out.extras
    assert ex["g_t"].shape == (2, 5, 3) and ex["g_s"].shape == (2, 7, 3)
    assert ex["a_r"].shape == (2, 5, 7) and ex["a_l"].shape == (2, 5, 7)
    assert (ex["g_t"][0, 3:] == 0).all() and (ex["g_s"][1, 4:] == 0).all()
    assert (ex["a_r"][1, :, 4:] == 0).all() and (ex["a_r"][0, 3:] == 0).all()
    assert torch.allclose(ex["a_r"][0, :3].sum(-1), torch.ones(3))
    # padding values never matter
    b2 = batch()
    b2.text[0, :, 3:] = 1e4
    b2.audio[1, :, 4:] = -1e4
    assert torch.allclose(model(b2).logits, out.logits, atol=1e-5)


def test_constraint_is_zero_when_the_maps_agree_and_weights_apply():
    a = torch.rand(2, 5, 7)
    t_mask, s_mask = torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 7, dtype=torch.bool)
    assert attention_constraint(a, a, t_mask, s_mask) == 0
    assert attention_constraint(a, a + 1, t_mask, s_mask) > 0
    b = batch()
    model = LEMER(text=(1, 6), speech=(1, 4), num_classes=3, cfg=CFG, fusion="constraint",
                  text_labels=torch.randn(3, 6), speech_labels=torch.randn(3, 4))
    losses = model.losses(model(b), b)
    mu = CFG.mu
    expect = mu[0] * losses["m"] + mu[1] * losses["c"] + mu[2] * losses["g_t"] + mu[3] * losses["g_s"]
    assert torch.isclose(losses["loss"], expect)


def test_cosine_scores_are_bounded():
    h = torch.randn(2, 4, 8)
    g = label_scores(h, torch.ones(2, 4, dtype=torch.bool), torch.randn(3, 8))
    assert g.abs().max() <= 1.0 + 1e-6
    assert cross_attention(h, h, torch.eye(8), torch.ones(2, 4, dtype=torch.bool),
                           torch.ones(2, 4, dtype=torch.bool)).sum(-1).allclose(torch.ones(2, 4))

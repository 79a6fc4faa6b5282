import json

import pytest
import torch

from sermo.data.batch import Batch
from sermo.features import FeatureStore
from sermo.training.runner import run_system
from tests.conftest import small_iemocap, tiny_speech_model, tiny_text_model
from sermo.systems.label_embedding.config import LabelEmbeddingConfig
from sermo.systems.label_embedding.labels import keyword_overlap, tfidf_top_k
from sermo.systems.label_embedding.model import LEMER, attention_constraint, cross_attention, label_scores

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


def test_tfidf_keywords_are_class_specific_on_a_zipf_corpus_with_shared_and_own_words():
    """Four classes share a Zipf vocabulary (function words, the silence unit) and each has 15
    words of its own, each rarer than the shared top words: most picked keywords are the class's
    own, and the lists hardly overlap (an IDF over utterances picked the same frequent words for
    every class: ../shared/reviews/tfidf_check.py)."""
    import numpy as np

    rng = np.random.default_rng(0)
    vocab, classes, per_class, length = 3000, 4, 1100, 12
    zipf = 1.0 / np.arange(1, vocab + 1) ** 1.05
    zipf /= zipf.sum()
    own = {c: list(range(vocab + 15 * c, vocab + 15 * (c + 1))) for c in range(classes)}
    docs = []
    for c in range(classes):
        p = np.concatenate([zipf * (1 - 15 * 0.0015), np.zeros(15 * classes)])
        p[own[c]] = 0.0015
        docs.append([list(rng.choice(len(p), length, p=p)) for _ in range(per_class)])
    top = tfidf_top_k(docs, 9)
    assert all(sum(t in own[c] for t in top[c]) >= 7 for c in range(classes)), top
    assert keyword_overlap(top) < 0.1
    assert keyword_overlap([[1, 2], [1, 2]]) == 1.0 and keyword_overlap([[1], [2]]) == 0.0


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


def test_the_paper_form_reads_the_encoders_outputs_and_pools_the_whole_sequence():
    # paper 003 Eq. 1-8: G = cos(H, L) on the encoders' own outputs, A_r between the two widths
    # through W, H_m = [H_t, H_s'] max-pooled over the whole sequence (context tokens and their
    # aligned speech included)
    import dataclasses

    paper = dataclasses.replace(CFG, projection="none", pool="sequence")
    torch.manual_seed(0)
    b = batch()
    b.extras["t_current"] = torch.tensor([2, 3])
    model = LEMER(text=(1, 6), speech=(1, 4), num_classes=3, cfg=paper, fusion="constraint",
                  text_labels=torch.randn(3, 6), speech_labels=torch.randn(3, 4))
    assert model.w.shape == (6, 4) and model.head.in_features == 6 + 4
    assert not any(isinstance(m, torch.nn.Linear) for m in model.text.proj.modules())
    out = model(b)
    # a context token's features reach the pooled vector: make one dominate, it shows
    b2 = batch()
    b2.extras["t_current"] = torch.tensor([2, 3])
    b2.text[0, 0, 0] += 100.0  # utterance 0's first token is context (3 real tokens, the last 2 its own)
    assert not torch.allclose(model(b2).embedding[0], out.embedding[0])
    split = LEMER(text=(1, 6), speech=(1, 4), num_classes=3, cfg=CFG, fusion="constraint",
                  text_labels=torch.randn(3, 6), speech_labels=torch.randn(3, 4))
    assert split.head.in_features == 3 * CFG.dim  # [H_t, H_s'] of the utterance, H_t of its context
    for kind in ("text", "speech"):
        one = LEMER(text=(1, 6) if kind == "text" else None, speech=(1, 4) if kind == "speech" else None,
                    num_classes=3, cfg=paper)
        assert one(b).logits.shape == (2, 3) and one.head.in_features == (6 if kind == "text" else 4)


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



class _Frame:
    """The part of a Manifest that ``context_manifest`` uses: ``.df`` and the constructor."""

    def __init__(self, df):
        self.df = df


def test_context_manifest_keeps_previous_turns_within_the_budget():
    import pandas as pd

    from sermo.systems.label_embedding.context import context_manifest

    df = pd.DataFrame({"id": [f"u{i}" for i in range(5)], "dialog": ["d"] * 4 + [None],
                       "turn_index": [3, 1, 2, 0, None], "transcript": ["g h", "c d e", "f", "a b", "x"]})
    got = dict(zip(df["id"], context_manifest(_Frame(df), 10, 6).df["transcript"]))
    assert got["u3"] is None  # the dialog's first turn has no context
    assert got["u1"] == "a b" and got["u2"] == "a b c d e"
    assert got["u0"] == "c d e f"  # "a b" as well would make 8 words with the utterance's own 2
    assert got["u4"] is None  # no dialog
    assert context_manifest(_Frame(df), 1, 100).df["transcript"][0] == "f"  # at most n turns


def test_own_tokens_are_the_last_ones():
    from sermo.systems.label_embedding.model import own_tokens

    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    own = own_tokens(mask, torch.tensor([2, 3]))
    assert own.tolist() == [[False, False, False, True, True, False], [True, True, True, False, False, False]]
    assert torch.equal(own_tokens(mask, None), mask)


def _tiny_run(corpus, tmp_path, overrides, speech_kind="hubert"):
    """One fold on a 50-utterance corpus with tiny HF encoders, one epoch; returns the run folder
    and the encoders' folders."""
    small = small_iemocap(corpus, tmp_path / "small.parquet", 5)
    speech, text = tiny_speech_model(tmp_path / "speech", kind=speech_kind), tiny_text_model(tmp_path / "bert")
    out = run_system("label_embedding", [("iemocap", small)], folds=[1], out=tmp_path / "run",
                     store=FeatureStore(tmp_path / "store"), progress=False, overrides=[
                         f"data.audio_encoder={speech}", "data.audio_layers=[-1]", f"data.text_encoder={text}",
                         "data.text_layers=[-1]", "train.epochs=1", "train.batch_size=8", "model.dim=8",
                         "model.units=6", "model.speech_k=3", "model.text_k=2", *overrides], profile="demo")
    return out, str(speech), str(text)


@pytest.mark.slow
def test_every_row_runs_one_step_with_tiny_hf_encoders(iemocap_synth, tmp_path):
    out, _, _ = _tiny_run(iemocap_synth, tmp_path, ["model.k_grid=[2, 3]"], speech_kind="wav2vec2-pretraining")
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == ["text", "text_context", "text_context_le", "speech", "speech_2nd", "speech_le", "le_mer",
                          "fusion_ar_plus_al", "fusion_al_only", "fusion_ar_only", "score_fusion"]
    assert "2nd stage" in rows["speech_2nd"]["skipped"]  # frozen encoders: nothing to continue pre-training
    assert all({"ua", "wa"} <= set(r["mean"]) for n, r in rows.items() if n != "speech_2nd")
    keywords = rows["text_context_le"]["info"][0]["text_labels"]["keywords"]
    assert set(keywords) == {"angry", "happy", "neutral", "sad"} and all(len(w) <= 2 for w in keywords.values())
    assert rows["speech_le"]["info"][0]["speech_labels"]["units"] == "wav2vec 2.0 quantizer (2 x 8 codes)"
    analysis = out / "fold1" / "analysis"
    assert [g["k"] for g in json.loads((analysis / "k_grid.json").read_text())] == [2, 3]
    # the row's own K (3) is the speech_le row itself, not trained a second time
    assert (out / "fold1" / "kgrid_speech_le_k2").is_dir() and not (out / "fold1" / "kgrid_speech_le_k3").exists()
    inits = json.loads((analysis / "inits.json").read_text())
    assert {(e["row"], e["init"]) for e in inits} == {("text_context_le", i) for i in ("tfidf", "label_words", "random")} \
        | {("speech_le", i) for i in ("codebook", "text", "random")}
    att = json.loads((analysis / "attention.json").read_text())
    assert len(att["g_t"]) > 0 and len(att["g_s"]) > 0
    report = (out / "REPORT.md").read_text()
    assert "k_grid.png" in report and "attention.png" in report and "Table 1" in report
    # a bundle of the full model predicts for new audio and its transcript (no dialog context there)
    from sermo.serving.predictor import Predictor

    wav = next(iter(sorted(iemocap_synth.rglob("*.wav"))))
    pred = Predictor.from_pretrained(out / "bundles" / "le_mer").predict_file(wav, transcript="I am so happy today")
    assert abs(sum(pred.categories.values()) - 1) < 1e-4


@pytest.mark.slow
def test_fine_tuned_encoders_train_inside_the_model(iemocap_synth, tmp_path):
    out, speech, text = _tiny_run(iemocap_synth, tmp_path, [
        "model.k_grid=[]", "model.compare_inits=false", "model.finetune=true", "model.rows=[text_context_le, le_mer]",
        "model.speech_units=kmeans", "model.pretrain_steps=2", "model.pretrain_batch_size=2"],
        speech_kind="wav2vec2-pretraining")
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert list(rows) == ["text_context_le", "le_mer"]
    assert rows["le_mer"]["info"][0]["speech_labels"]["units"] == "k-means (6) of the training frames (asked for)"
    config = json.loads((out / "bundles" / "le_mer" / "config.json").read_text())
    # the speech encoder fine-tuned is the one whose pre-training continued on the fold's audio
    second = out / "fold1" / "speech_2nd_stage"
    from sermo.data.spec import ModelSpec

    assert ModelSpec.from_dict(config["spec"]).speech_model == "./encoders/speech"  # embedded in the bundle
    from sermo.data.bundle import read_bundle

    spec = read_bundle(out / "bundles" / "le_mer")[0].spec
    bundled = out / "bundles" / "le_mer" / "encoders"
    assert spec.speech_model == str(bundled.resolve() / "speech") and spec.text_model == str(bundled.resolve() / "text")
    assert json.loads((bundled / "speech" / "config.json").read_text()) == json.loads((second / "config.json").read_text())
    assert spec.inputs.wave and spec.inputs.tokens == spec.text_model and spec.inputs.audio is None
    from safetensors.torch import load_file

    before, after = load_file(f"{speech}/model.safetensors"), load_file(f"{second}/model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if "quantizer" in k or "encoder.layers" in k)
    # the encoders' parameters are trained with the rest (all but the speech model's CNN)
    from sermo.config import build
    from sermo.systems.label_embedding.model import build_model

    cfg = build(LabelEmbeddingConfig, config["model"], "bundle")
    with_encoders = build_model("le_mer", cfg, spec)
    total = sum(p.numel() for p in with_encoders.parameters())
    encoders = sum(p.numel() for m in (with_encoders.speech.encoder, with_encoders.text.encoder) for p in m.parameters())
    cnn = sum(p.numel() for p in with_encoders.speech.encoder.model.feature_extractor.parameters())
    assert total - encoders + 1000 < rows["le_mer"]["trainable_params"] <= total - cnn
    from sermo.serving.predictor import Predictor

    wav = next(iter(sorted(iemocap_synth.rglob("*.wav"))))
    pred = Predictor.from_pretrained(out / "bundles" / "le_mer").predict_file(wav, transcript="what a lovely day")
    assert abs(sum(pred.categories.values()) - 1) < 1e-4


def test_label_guided_attention_is_on_the_vanilla_attentions_scale_and_only_guides_it():
    torch.manual_seed(0)
    b, tt, ts = 2, 6, 300  # many frames: an unnormalised A_l would be ~300 times A_r
    g = torch.Generator().manual_seed(1)
    batch_ = Batch(ids=["a", "b"], dims=torch.zeros(b, 3), category=torch.tensor([0, 1]),
                   text=torch.randn(b, 1, tt, 6, generator=g), text_mask=torch.ones(b, tt, dtype=torch.bool),
                   audio=torch.randn(b, 1, ts, 4, generator=g), audio_mask=torch.ones(b, ts, dtype=torch.bool))
    batch_.audio_mask[1, 200:] = False
    model = LEMER(text=(1, 6), speech=(1, 4), num_classes=3, cfg=CFG, fusion="constraint",
                  text_labels=torch.randn(3, 6), speech_labels=torch.randn(3, 4))
    ex = model(batch_).extras
    a_r, a_l = ex["a_r"], ex["a_l"]
    # rows sum to one over the real frames, like A_r's; padded frames get nothing
    assert torch.allclose(a_l.sum(-1), torch.ones(b, tt), atol=1e-5) and (a_l[1, :, 200:] == 0).all()
    assert a_l[0].mean().item() == pytest.approx(a_r[0].mean().item(), rel=1e-4) == pytest.approx(1 / ts, rel=1e-4)
    # L_c pulls A_r towards A_l: its gradient reaches the cross-attention, not the label embeddings
    loss = attention_constraint(a_l, a_r, ex["t_mask"], ex["s_mask"])
    loss.backward()
    assert model.w.grad.abs().sum() > 0
    assert model.text.labels.grad is None or model.text.labels.grad.abs().sum() == 0
    assert model.speech.labels.grad is None or model.speech.labels.grad.abs().sum() == 0
    # fused with A_l alone, H_s' is a weighted mean of frames: it does not grow with their number
    al_only = LEMER(text=(1, 6), speech=(1, 4), num_classes=3, cfg=CFG, fusion="al",
                    text_labels=torch.randn(3, 6), speech_labels=torch.randn(3, 4))
    assert torch.isfinite(al_only(batch_).logits).all() and al_only(batch_).logits.abs().max() < 50


def _realistic(seed=0, b=16, tt=100, ts=250, d=256, c=4, sep=1.0):
    """Token and frame states of realistic shapes whose label scores single out, for each token,
    the frames of its own class (``sep``: how strongly frames and tokens carry their class)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randn(c, d, generator=g)
    tok_cls = torch.randint(0, c, (b, tt), generator=g)
    frm_cls = torch.randint(0, c, (b, ts), generator=g)
    ht = torch.randn(b, tt, d, generator=g) + sep * labels[tok_cls]
    hs = torch.randn(b, ts, d, generator=g) + sep * labels[frm_cls]
    t_mask, s_mask = torch.ones(b, tt, dtype=torch.bool), torch.ones(b, ts, dtype=torch.bool)
    _realistic.same = tok_cls[:, :, None] == frm_cls[:, None, :]  # (B, Tt, Ts): frame of the token's class
    return ht, hs, labels, t_mask, s_mask, torch.randint(0, c, (b,), generator=g)


def _fusion_losses(w, head, ht, hs, labels, t_mask, s_mask, y, temperature):
    from sermo.nn.pooling import masked_max
    from sermo.systems.label_embedding.model import label_guided_attention

    a_r = cross_attention(ht, hs, w, t_mask, s_mask)
    a_l = label_guided_attention(label_scores(ht, t_mask, labels), label_scores(hs, s_mask, labels), t_mask, s_mask,
                                 temperature=temperature)
    v = masked_max(torch.cat([ht, a_r @ hs], dim=-1), t_mask)
    l_m = torch.nn.functional.cross_entropy(head(v), y)
    return l_m, attention_constraint(a_l, a_r, t_mask, s_mask), a_l, a_r


def test_attention_constraint_has_a_real_share_of_the_gradient_at_realistic_shapes():
    """Eq. 10 as written (a per-utterance squared norm) against a peaked, row-normalised A_l: at
    initialisation mu2 L_c moves W by at least 1e-2 of what L_m does (a mean over all token-frame
    pairs against a flat softmax gave 2.6e-5: ../shared/reviews/lc_check.py)."""
    torch.manual_seed(0)
    ht, hs, labels, t_mask, s_mask, y = _realistic()
    d = ht.shape[-1]
    w = torch.nn.Parameter(torch.eye(d) + 0.01 * torch.randn(d, d))
    head = torch.nn.Linear(2 * d, 4)
    l_m, l_c, a_l, a_r = _fusion_losses(w, head, ht, hs, labels, t_mask, s_mask, y, CFG.attention_temperature)
    mu1, mu2 = CFG.mu[:2]
    (g_m,) = torch.autograd.grad(mu1 * l_m, w, retain_graph=True)
    (g_c,) = torch.autograd.grad(mu2 * l_c, w)
    assert g_c.norm() / g_m.norm() >= 1e-2
    # and A_l is a target that guides: it puts most of each token's weight on the frames of the
    # token's class (a quarter of them), where a flat softmax puts a quarter
    on_own_class = float((a_l * _realistic.same).sum(-1).mean())
    assert on_own_class > 0.8


def test_attention_constraint_pulls_the_vanilla_attention_towards_the_label_guided_one():
    """A few hundred steps with L_c bring A_r close to A_l; the same training without it does not."""
    ht, hs, labels, t_mask, s_mask, y = _realistic(seed=1, b=8, tt=12, ts=40, d=32, sep=2.0)
    distance = {}
    for with_constraint in (True, False):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.eye(32) + 0.01 * torch.randn(32, 32))
        head = torch.nn.Linear(64, 4)
        opt = torch.optim.Adam([w, *head.parameters()], lr=1e-2)
        for _ in range(300):
            l_m, l_c, _, _ = _fusion_losses(w, head, ht, hs, labels, t_mask, s_mask, y, CFG.attention_temperature)
            loss = CFG.mu[0] * l_m + (CFG.mu[1] * l_c if with_constraint else 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            _, _, a_l, a_r = _fusion_losses(w, head, ht, hs, labels, t_mask, s_mask, y, CFG.attention_temperature)
            # KL(A_l || A_r) per token, mean
            distance[with_constraint] = float((a_l * (torch.log(a_l + 1e-9) - torch.log(a_r + 1e-9))).sum(-1).mean())
    assert distance[True] < 0.5 * distance[False], distance


def test_le_mer_and_fusion_ar_only_are_different_models():
    """C1 (A_r under L_c) and C4 (A_r alone) trained on the same batch from the same seed end with
    other weights and other predictions: the constraint acts."""
    b = batch()
    outs = {}
    for fusion in ("constraint", "ar"):
        torch.manual_seed(0)
        model = LEMER(text=(1, 6), speech=(1, 4), num_classes=3, cfg=CFG, fusion=fusion,
                      text_labels=torch.randn(3, 6), speech_labels=torch.randn(3, 4))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(20):
            loss = model.losses(model(b), b)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        outs[fusion] = torch.softmax(model.eval()(b).logits, -1)
    # (with the mean over pairs and the flat A_l of before: 0.007 apart, Adam's step size alone)
    assert (outs["constraint"] - outs["ar"]).abs().max() > 0.03


def test_a_copied_bundle_of_a_row_on_the_continued_speech_encoder_predicts(tmp_path):
    """A row fine-tuned on the 2nd stage's checkpoint (a folder inside the run's fold) keeps that
    encoder's architecture in its bundle: copied elsewhere, with the run folder gone, it rebuilds
    the same model and predicts new audio."""
    import dataclasses
    import shutil

    from sermo.data.bundle import BundleConfig, read_bundle, save_bundle
    from sermo.data.labels import get_label_space
    from sermo.data.spec import InputSpec, ModelSpec
    from sermo.serving.predictor import Predictor
    from sermo.systems.label_embedding.model import build_model
    from tests.conftest import write_tone

    second = tiny_speech_model(tmp_path / "run" / "fold1" / "speech_2nd_stage", kind="wav2vec2")
    spec = ModelSpec(InputSpec(wave=True, max_wave_seconds=20.0), 4, second, None, {"label_dims": {"audio": 3}})
    torch.manual_seed(0)
    model = build_model("speech_le", CFG, spec).eval()
    b = Batch(ids=["a", "b"], dims=torch.zeros(2, 3), category=torch.tensor([0, 1]), wave=torch.randn(2, 8000),
              wave_lengths=torch.tensor([8000, 6000]))
    expected = model(b).logits
    save_bundle(tmp_path / "run" / "bundles" / "speech_le", model, BundleConfig(
        system="label_embedding", row="speech_le", modalities=["audio"], model=dataclasses.asdict(CFG), spec=spec,
        label_space=get_label_space("iemocap-4").to_dict(), label_scale=[1.0, 5.0]))
    copy = shutil.copytree(tmp_path / "run" / "bundles" / "speech_le", tmp_path / "elsewhere" / "speech_le")
    shutil.rmtree(tmp_path / "run")
    assert not list(copy.glob("encoders/speech/*.safetensors")) and (copy / "encoders/speech/config.json").is_file()
    config, weights = read_bundle(copy)
    assert config.spec.speech_model == str(copy.resolve() / "encoders" / "speech")
    rebuilt = build_model(config.row, CFG, config.spec)
    rebuilt.load_state_dict(weights)
    torch.testing.assert_close(rebuilt.eval()(b).logits, expected)
    prediction = Predictor.from_pretrained(copy).predict_file(str(write_tone(tmp_path / "tone.wav", seconds=1.0)))
    assert set(prediction.categories) == set(get_label_space("iemocap-4").classes) and prediction.category


def test_every_row_is_an_architecture_of_the_table_and_no_name_is_parsed():
    """What a row's model is comes from one table, not from its name: every row that trains a model
    is there, score_fusion (a combination) is not, and a made-up name is refused by name."""
    import pytest

    from sermo.systems.label_embedding.config import ARCHITECTURES, FUSION, ROWS
    from sermo.systems.label_embedding.model import build_model
    from tests.systems.contract import feats, spec

    assert set(ARCHITECTURES) == set(ROWS) - {"score_fusion"}
    assert all(ARCHITECTURES[r].fusion == FUSION[r] and ARCHITECTURES[r].context for r in FUSION)
    assert not ARCHITECTURES["speech"].second_stage and ARCHITECTURES["speech_2nd"].second_stage
    with pytest.raises(ValueError, match="no model for row 'speech_le_k64'"):
        build_model("speech_le_k64", CFG, spec(audio=feats(1, 6)))


def test_declared_rows_plan_features_read_every_epoch_or_once_when_fine_tuned():
    """Frozen, every row's model reads its modalities' features every epoch (the context rows the
    dialog context's too); fine-tuned, the stored features are read once (standardisation, the
    label embeddings' start): planned with no reader per epoch."""
    from tests.systems.contract import planned

    rows = ["model.rows=[text,text_context,speech]", "model.k_grid=[]", "model.compare_inits=false"]
    assert planned("label_embedding", "demo", *rows, "model.finetune=false") == {
        ("minilm", (-1,)): (3, False, False), ("whisper-tiny.en", (-1,)): (1, False, False)}
    assert planned("label_embedding", "demo", *rows, "model.finetune=true") == {
        ("minilm", (-1,)): (0, False, False), ("whisper-tiny.en", (-1,)): (0, False, False)}
    grid = planned("label_embedding", "demo", "model.rows=[speech_le]", "model.k_grid=[10,20]",
                   "model.compare_inits=false", "model.finetune=false")
    assert grid == {("whisper-tiny.en", (-1,)): (1 + 2, False, False)}

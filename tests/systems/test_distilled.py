import json

import numpy as np
import pytest
import torch

from sermo.data.batch import Batch
from sermo.data.corpora import prepare
from sermo.data.labels import get_label_space
from sermo.features import FeatureStore
from sermo.nn.pooling import MeanMaxPool
from sermo.systems.distilled.config import DistilledConfig
from sermo.systems.distilled.model import DistilledModel, Stream, freeze
from sermo.data.labels import Labels
from sermo.training.runner import run_system
from tests.conftest import small_iemocap, tiny_speech_model, tiny_text_model


def test_mean_max_pooling_never_sees_padding():
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    padded = x.clone()
    padded[0, 3:] = 1e6  # huge values in the padding: neither the mean nor the max may see them
    pooled = MeanMaxPool()(padded, mask)
    assert torch.allclose(pooled[0, :3], x[0, :3].mean(0)) and torch.allclose(pooled[0, 3:], x[0, :3].max(0).values)
    assert torch.allclose(pooled[1], MeanMaxPool()(x, mask)[1])
    negative = -torch.rand(1, 4, 2) - 1.0  # every real value below the zero padding
    assert (MeanMaxPool()(negative, torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)) < -0.5).all()


def test_labels_normalise_to_unit_interval_and_back(iemocap_synth):
    manifest = prepare("iemocap", iemocap_synth)
    labels = Labels.from_manifest(manifest, get_label_space("iemocap-4"))
    ids = manifest.df["id"].tolist()[:50]
    unit = np.stack([labels.dims[u] for u in ids])
    assert np.nanmin(unit) >= 0.0 and np.nanmax(unit) <= 1.0
    back = labels.to_corpus_scale(ids, unit)
    truth = manifest.df.set_index("id").loc[ids, ["arousal", "valence", "dominance"]].to_numpy(float)
    assert np.allclose(back, truth, equal_nan=True)


def test_layer_weights_are_a_softmax_that_sums_to_one():
    stream = Stream(5, 4)
    with torch.no_grad():
        stream.layers.raw.copy_(torch.tensor([3.0, -1.0, 0.5, 0.0, 2.0]))
    w = stream.layers.weights()
    assert torch.isclose(w.sum(), torch.tensor(1.0)) and (w > 0).all() and int(w.argmax()) == 0


def make_batch(n=4, frames=12, tokens=6):
    g = torch.Generator().manual_seed(0)
    return Batch(ids=[str(i) for i in range(n)], dims=torch.rand(n, 3, generator=g),
                 category=torch.zeros(n, dtype=torch.long), audio=torch.randn(n, 1, frames, 8, generator=g),
                 audio_mask=torch.ones(n, frames, dtype=torch.bool), text=torch.randn(n, 1, tokens, 6, generator=g),
                 text_mask=torch.ones(n, tokens, dtype=torch.bool))


def test_model_predicts_three_dimensions_and_a_single_dimension_model_learns_one():
    cfg = DistilledConfig(hidden=8)
    batch = make_batch()
    model = DistilledModel(audio=(1, 8), text=(1, 6), cfg=cfg)
    out = model(batch)
    # the pooled vectors keep the encoders' widths (the paper's d_A + d_T): mean and max are added
    assert out.dims.shape == (4, 3) and out.embedding.shape == (4, 8 + 6)
    concat = DistilledModel(audio=(1, 8), text=(1, 6), cfg=DistilledConfig(hidden=8, pooling="concat"))
    assert concat(batch).embedding.shape == (4, 2 * 8 + 2 * 6)
    single = DistilledModel(audio=(1, 8), text=None, cfg=cfg, targets=(1,))
    out = single(batch)
    assert out.dims.shape == (4, 1)
    loss = single.losses(out, batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)


def test_ft_frz_freezes_the_fine_tuned_speech_stream_and_the_text_encoder(tmp_path):
    from sermo.encoders.speech import SpeechSSL
    from sermo.encoders.text import TextSSL

    cfg = DistilledConfig(hidden=8, speech_layers=[-1])
    speech = SpeechSSL(tiny_speech_model(tmp_path / "hubert"))
    speech.set_trainable_layers("all")
    audio_only = DistilledModel(audio=None, text=None, cfg=cfg, speech=speech)
    assert any(p.requires_grad for p in audio_only.audio.encoder.parameters())
    # second stage: the fine-tuned stream and the text stream fixed, a new head trained
    model = DistilledModel(audio=(1, 8), text=(1, 6), cfg=cfg)
    model.audio = freeze(audio_only.audio)
    freeze(model.text)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("ffn.") for n in trainable)
    # a text encoder fine-tuned on its top layer from the stored state below it
    text = TextSSL(tiny_text_model(tmp_path / "bert"))
    text.set_trainable_layers(1)
    assert {n.split(".")[3] for n, p in text.named_parameters() if p.requires_grad} == {"1"}
    text.eval()  # no dropout: the two paths must agree
    ids = torch.from_numpy(np.stack([text.tokenize("i am so glad"), text.tokenize("the dinner was okay")]))
    lengths = torch.tensor([ids.shape[1], ids.shape[1]])
    full, mask = text(ids, lengths)
    top = text.forward_top(full[:, 1], mask, 1)
    assert torch.allclose(top[:, -1], full[:, -1], atol=1e-5)


@pytest.mark.slow
# ft also trains the FT=>FRZ row (mode ft_frz builds that row alone, through the same code)
@pytest.mark.parametrize("mode", ["ft", "frozen"])
def test_each_mode_runs_with_tiny_hf_encoders(iemocap_synth, tmp_path, mode):
    small = small_iemocap(iemocap_synth, tmp_path / "small.parquet", 4)  # 40 utterances, 5 sessions
    speech, text = tiny_speech_model(tmp_path / "hubert"), tiny_text_model(tmp_path / "bert")
    out = run_system("distilled", [("iemocap", small)], folds=[1], out=tmp_path / "run",
                     store=FeatureStore(tmp_path / "store"), progress=False, overrides=[
                         f"data.text_encoder={text}", "data.text_layers=[-1]", "train.epochs=1",
                         "train.batch_size=8", f"model.speech_encoders=[{speech}]", "model.hidden=8",
                         f"model.mode={mode}", "model.text_finetune_layers=1", "model.importance_epochs=1",
                         f"model.importance_encoders=[{speech}]", f"model.robustness_encoder={speech}",
                         f"data.audio_encoder={speech}",
                         "model.transcript_engines=[whisper-tiny]"]
                     # the analyses once (with ft) are enough
                     + ([] if mode == "ft" else ["model.layer_importance=false", "model.transcript_engines=[]"]), profile="demo")
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    folder, speech = speech, "hubert"  # rows are named by the folder's last part
    names = [speech, speech + "+text"] + ([speech + "+text@ft_frz"] if mode == "ft" else [])
    assert list(rows) == names
    assert all("ccc_valence" in r["mean"] for r in rows.values())
    if mode == "ft":  # the fine-tuned speech encoder's parameters are trained
        assert rows[speech]["trainable_params"] > rows[speech + "+text@ft_frz"]["trainable_params"]
    if mode != "ft":
        return
    importance = json.loads((out / "fold1" / "analysis" / "layer_importance.json").read_text())
    weights = importance[speech]["weights"]
    assert set(weights) == {"arousal", "valence", "dominance"}
    assert all(abs(sum(w) - 1.0) < 1e-5 and len(w) == 4 for w in weights.values())  # CNN + 3 layers
    robust = json.loads((out / "fold1" / "analysis" / "transcripts.json").read_text())
    assert robust["rows"][0]["transcripts"] == "oracle" and "ccc_valence" in robust["rows"][0]
    report = (out / "REPORT.md").read_text()
    assert "Layer importance" in report and "Transcript robustness" in report
    # fine-tuned rows read samples: the speech encoder's last-layer features were never extracted (only
    # every hidden state, for the layer-importance analysis)
    stored = [json.loads(p.read_text()) for p in (tmp_path / "store").glob("*/identity.json")]
    assert [i["layers"] for i in stored if i["name"] == folder] == [None]
    config = json.loads((out / "bundles" / (speech + "+text") / "config.json").read_text())
    # the fine-tuned speech encoder reads samples; the text model its top layer on the stored state below it
    spec = config["spec"]
    # (both are local checkpoint folders: their architectures travel in the bundle, their weights are its own)
    assert spec["speech_model"] == "./encoders/speech" and spec["inputs"]["wave"] and spec["inputs"]["audio"] is None
    assert spec["text_model"] == "./encoders/text"
    assert spec["options"] == {"text_top": 1, "task": "dims", "architecture": "audio+text"}
    bundle = out / "bundles" / (speech + "+text")
    assert json.loads((bundle / "encoders" / "speech" / "config.json").read_text()) == \
        json.loads((__import__("pathlib").Path(folder) / "config.json").read_text())
    assert spec["inputs"]["text"]["layers"] == [1] and spec["inputs"]["tokens"] is None
    from sermo.serving.predictor import Predictor

    wav = next(iter(sorted(iemocap_synth.rglob("*.wav"))))
    pred = Predictor.from_pretrained(out / "bundles" / (speech + "+text")).predict_file(wav, transcript="i am so glad")
    assert pred.valence is not None and pred.transcript_source == "given"


def test_the_pruned_large_model_keeps_only_its_first_layers(tmp_path, monkeypatch):
    """w2v2-L-robust(p): the model is cut to its first 12 of 24 layers, frozen or fine-tuned, and
    layer -1 is the last layer kept (a tiny 3-layer model cut to 2 stands in)."""
    from sermo.encoders import get_encoder, registry
    from sermo.encoders.registry import EncoderSpec, load_trainable

    folder = tiny_speech_model(tmp_path / "robust")
    monkeypatch.setitem(registry.REGISTRY, "tiny-robust", EncoderSpec("speech", folder, keep_layers=3))
    frozen = get_encoder("tiny-robust", layers=[-1])
    assert frozen.num_layers == 3 and frozen.layers == (2,)
    full = get_encoder(folder, layers=[-1])
    assert full.layers == (3,)
    x = np.random.default_rng(0).normal(size=8000).astype(np.float32)
    assert frozen.encode(x).hidden.shape == (1, 398, 16)
    tuned = load_trainable("tiny-robust")
    assert len(tuned.transformer_layers()) == 2 and tuned.num_hidden_states == 3
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(tuned) < params(load_trainable(folder))


def test_fine_tuned_rows_are_bucketed_by_waveform_length():
    from sermo.features.pipeline import GivenUtterances, UtteranceDataset

    waves = {f"u{i}": np.zeros(n, np.float32) for i, n in enumerate([16000, 4000, 9000])}
    ds = UtteranceDataset(list(waves), utterances=GivenUtterances(waves, {}), wave=True,
                          length_of=lambda u: len(waves[u]))
    assert [ds.length(i) for i in range(3)] == [16000, 4000, 9000]


def test_declared_rows_and_analyses_plan_what_the_demo_reads():
    """The demo fine-tunes Whisper's and MiniLM's top layers on the stored states below them:
    every row reads the speech state (three rows), the fine-tuned +text row the text state, the
    FT=>FRZ row MiniLM's frozen last layer; the analyses (layer importance: every hidden state,
    three models; transcripts: the oracle's and one engine's) are planned on the analysis folds."""
    from tests.systems.contract import planned

    uses = planned("distilled", "demo")
    assert uses[("whisper-tiny.en", (3,))] == (3 + 2, False, False)
    assert uses[("minilm", (4,))] == (1 + 2, False, False) and uses[("minilm", (-1,))] == (1, False, False)
    assert uses[("whisper-tiny.en", None)] == (3, True, False) and uses[("minilm", None)] == (3, True, False)
    frozen = planned("distilled", "demo", "model.mode=frozen", "model.layer_importance=false",
                     "model.transcript_engines=[]")
    assert frozen == {("whisper-tiny.en", (-1,)): (2, False, False), ("minilm", (-1,)): (1, False, False)}

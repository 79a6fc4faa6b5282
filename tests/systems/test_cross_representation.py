import json

import numpy as np
import pytest
import torch

from sermo.data.batch import Batch
from sermo.encoders.asr import SIL, PhoneSegment, phones_to_frames
from sermo.features import FeatureStore
from sermo.nn.layers import LayerWeighting
from sermo.nn.autovc import downsample, upsample
from sermo.nn.layers import align_frames, chunk
from sermo.systems.cross_representation.config import CrossRepresentationConfig
from sermo.systems.cross_representation.fusion import fusion_grid
from sermo.systems.cross_representation.model import CrossRepresentation
from sermo.systems.cross_representation.probe import probe_split
from sermo.systems.cross_representation.text import TextCNN, word_tokens
from sermo.training.runner import run_system
from tests.conftest import small_iemocap, tiny_speech_model, tiny_text_model

CFG = CrossRepresentationConfig(channels=16, encoder_convs=1, encoder_lstm_layers=1, decoder_lstm1=16, decoder_convs=1,
                                decoder_lstm2=16, decoder_lstm2_layers=1, postnet_convs=2, postnet_channels=16,
                                phone_dim=8, classifier=[16], dropout=0.0)


def speech_batch(lengths, layers=3, dim=6, seed=0, mel=False):
    g = torch.Generator().manual_seed(seed)
    n, t = len(lengths), max(lengths)
    mask = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
    b = Batch(ids=[str(i) for i in range(n)], dims=torch.full((n, 3), float("nan")),
              category=torch.arange(n) % 4, audio=torch.randn(n, layers, t, dim, generator=g) * mask[:, None, :, None],
              audio_mask=mask)
    b.speaker = torch.randn(n, 256, generator=g)
    if mel:
        b.extras.update(mel=torch.randn(n, 2 * t, 80, generator=g), mel_len=2 * torch.tensor(lengths),
                        phones=torch.randint(3, 128, (n, 2 * t), generator=g), phones_len=2 * torch.tensor(lengths))
    return b


@pytest.mark.parametrize("d, f", [(8, 48), (128, 2)])
def test_down_and_upsampling_shapes(d, f):
    model = CrossRepresentation((3, 6), 4, CFG, d=d, f=f)
    x = torch.randn(2, 3, 96, 6)
    codes = model.encoder(x, torch.randn(2, 256))
    assert codes.shape == (2, 96 // f, 2 * d)
    assert upsample(codes, f).shape == (2, 96, 2 * d)
    assert model.code_dim == 96 // f * 2 * d
    # AutoVC's downsampler: forward half at the end of each block, backward half at its start
    h = torch.arange(96.0)[None, :, None].repeat(1, 1, 2)
    down = downsample(h, f)
    assert down[0, :, 0].tolist() == list(np.arange(f - 1, 96, f, dtype=float))
    assert down[0, :, 1].tolist() == list(np.arange(0, 96, f, dtype=float))
    # the training forward (with reconstruction) has the same code shape
    model.train()
    out = model(speech_batch([120, 50], mel=True))
    assert out.extras["mel"].shape == (2, 96, 80) and out.extras["mel_post"].shape == (2, 96, 80)
    losses = model.losses(out, speech_batch([120, 50], mel=True))
    assert set(losses) == {"loss", "e", "r1", "r2"}
    assert torch.isclose(losses["loss"], losses["e"] + losses["r1"] + losses["r2"])


def test_inference_averages_chunk_probabilities():
    torch.manual_seed(0)
    model = CrossRepresentation((3, 6), 4, CFG, d=8, f=48).eval()
    batch = speech_batch([250, 40])  # 3 chunks (the last zero-padded) and 1 chunk
    segs, spk, owner = model.chunks(batch)
    assert owner.tolist() == [0, 0, 0, 1]
    assert segs.shape == (4, 3, 96, 6)
    assert torch.equal(segs[2, :, : 250 - 192], batch.audio[0, :, 192:250]) and (segs[2, :, 58:] == 0).all()
    assert (segs[3, :, 40:] == 0).all()
    with torch.no_grad():
        probs = torch.softmax(model.classifier(model.codes(segs, spk)), -1)
        out = model(batch)
    assert torch.allclose(out.logits.exp()[0], probs[:3].mean(0), atol=1e-5)
    assert torch.allclose(out.logits.exp()[1], probs[3], atol=1e-5)
    # padding of the batch never changes an utterance's prediction
    alone = Batch(ids=["1"], dims=batch.dims[1:], category=batch.category[1:], audio=batch.audio[1:, :, :40],
                  audio_mask=batch.audio_mask[1:, :40])
    alone.speaker = batch.speaker[1:]
    with torch.no_grad():
        assert torch.allclose(model(alone).logits, out.logits[1:], atol=1e-5)
    assert chunk(torch.ones(1, 96, 2), 96, 96).shape == (1, 1, 96, 2)


def test_layer_average_weights_are_normalised():
    w = LayerWeighting(25, "normalized")
    with torch.no_grad():
        w.raw.copy_(torch.rand(25) * 3)
    assert torch.isclose(w.weights().sum(), torch.tensor(1.0))
    x = torch.randn(2, 25, 4, 3)
    expect = (w.raw[None, :, None, None] * x).sum(1) / w.raw.sum()
    assert torch.allclose(w(x), expect, atol=1e-5)
    model = CrossRepresentation((25, 6), 4, CFG, d=8, f=48)
    assert model.encoder.weighting.mode == "normalized"


def test_phone_ids_line_up_with_frames():
    segs = [PhoneSegment(SIL, "<sil>", 0, 10), PhoneSegment(40, "K_B", 10, 5), PhoneSegment(50, "AE_E", 15, 25)]
    at100 = phones_to_frames(segs, 40, 100.0)
    assert at100[:10].tolist() == [SIL] * 10 and at100[10:15].tolist() == [40] * 5 and at100[15:].tolist() == [50] * 25
    at50 = phones_to_frames(segs, 20, 50.0)  # 20 ms frames: each takes the phone covering most of it
    assert at50[:5].tolist() == [SIL] * 5 and at50[5:7].tolist() == [40, 40] and at50[8:].tolist() == [50] * 12
    # the model maps the mel clock (here 2 frames per input frame) onto the input's clock
    model = CrossRepresentation((1, 6), 4, CFG, d=8, f=48).train()
    batch = speech_batch([60], layers=1, mel=True)
    ids = torch.arange(120) % 120 + 3
    batch.extras["phones"], batch.extras["phones_len"] = ids[None], torch.tensor([120])
    lengths = batch.audio_mask.sum(1)
    idx = torch.arange(96)[None]
    _, phones = model._targets(batch, lengths, idx, idx < lengths[:, None])
    assert torch.equal(phones[0, :60], ids[::2]) and (phones[0, 60:] == 0).all()  # crop padding: PAD
    mel = torch.arange(8.0)[:, None].repeat(1, 2)
    assert align_frames(mel, 4)[:, 0].tolist() == [0.5, 2.5, 4.5, 6.5]


def test_text_cnn_leaves_special_tokens_and_padding_out():
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    assert word_tokens(mask).tolist() == [[False, True, True, False, False], [True, True, False, False, False]]
    # with the tokens' word indices: XLNet's special tokens come last, and its first word stays
    xlnet = torch.tensor([[0, 1, -1, -1, -1], [0, -1, -1, -1, -1]])
    assert word_tokens(mask, xlnet).tolist() == [[True, True, False, False, False], [True, False, False, False, False]]
    torch.manual_seed(0)
    model = TextCNN((1, 6), 4, CFG).eval()
    x = torch.randn(2, 1, 5, 6) * mask[:, None, :, None]
    b = Batch(ids=["a", "b"], dims=torch.zeros(2, 3), category=torch.tensor([0, 1]), text=x, text_mask=mask)
    out = model(b)
    x2 = x.clone()
    x2[0, :, 4] = 1e3  # padding
    b2 = Batch(ids=["a", "b"], dims=torch.zeros(2, 3), category=torch.tensor([0, 1]), text=x2, text_mask=mask)
    assert torch.allclose(model(b2).logits, out.logits, atol=1e-5)


def test_probe_split_tests_every_speaker_with_two_utterances():
    speaker_of = {"a1": "A", "b1": "B", "b2": "B", "c1": "C", "c2": "C", "c3": "C", "c4": "C", "c5": "C"}
    train, test = probe_split(sorted(speaker_of), speaker_of, 0.8, seed=0)
    assert sorted(train + test) == sorted(speaker_of) and not set(train) & set(test)
    tested = [speaker_of[u] for u in test]
    # A's only utterance trains; B keeps one of two for testing; C 4 of 5 to train
    assert "a1" in train and tested.count("B") == 1 and tested.count("C") == 1
    assert probe_split(["a1", "b1"], speaker_of, 0.8, seed=0)[1] == []


def test_fusion_grid_finds_the_weights():
    truth = np.array([0, 1, 2, 0, 1, 2])
    p_s = np.eye(3)[[0, 1, 2, 1, 2, 0]] * 0.6 + 0.1  # right on the first half
    p_t = np.eye(3)[[1, 2, 0, 0, 1, 2]] * 0.9 + 0.03  # right on the second half, more confident
    grid = {(g["w1"], g["w2"]): g["ua"] for g in fusion_grid(p_s, p_t, truth, [0.0, 0.5, 1.0])}
    assert (0.0, 0.0) not in grid and len(grid) == 8
    assert grid[(1.0, 0.0)] == 0.5 and grid[(0.0, 1.0)] == 0.5


@pytest.mark.slow
def test_both_configurations_and_the_text_model_run_one_step(iemocap_synth, tmp_path):
    small = small_iemocap(iemocap_synth, tmp_path / "small.parquet", 5)
    speech, text = tiny_speech_model(tmp_path / "hubert"), tiny_text_model(tmp_path / "bert")
    out = run_system("cross_representation", [("iemocap", small)], folds=[1], out=tmp_path / "run",
                     store=FeatureStore(tmp_path / "store"), progress=False, overrides=[
                         f"data.audio_encoder={speech}", "data.audio_layers=null", f"data.text_encoder={text}",
                         "data.text_layers=[-1]", "train.epochs=1", "train.batch_size=8", "model.text_epochs=1",
                         "model.channels=16", "model.encoder_convs=1", "model.encoder_lstm_layers=1",
                         "model.decoder_lstm1=16", "model.decoder_lstm2=16", "model.decoder_lstm2_layers=1",
                         "model.postnet_convs=2", "model.postnet_channels=16", "model.phone_dim=8",
                         "model.classifier=[16]", "model.text_filters=[8]", "model.probe=[32, 16, 16]",
                         "model.probe_epochs=2", "model.fusion_grid=[0.0, 0.5, 1.0]",
                         "model.text_encoders=[not-a-cached/model]", "model.speaker_utterances=2"], profile="demo")
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == ["speech_small", "speech_large", "speech_mel_input", "text", "text@not-a-cached/model",
                          "fusion"]
    # the speaker encoder ran only on the utterances each speaker's embedding averages
    import pandas as pd

    table = pd.read_parquet(small)
    folder = next(p.parent for p in (tmp_path / "store").glob("*/identity.json") if "resemblyzer" in p.read_text())
    assert len(list(folder.rglob("*.npy"))) == 2 * table["speaker"].nunique() < len(table)
    assert "unavailable" in rows["text@not-a-cached/model"]["skipped"]
    assert all("ua" in rows[r]["mean"] for r in ("speech_small", "speech_large", "speech_mel_input", "text", "fusion"))
    # the mel-input row's crops span what wav2vec 2.0's 96 frames of 20 ms do (its 10 ms frames are
    # averaged in pairs), not half of it (this tiny speech model has a faster clock than wav2vec's)
    assert rows["speech_mel_input"]["info"][0]["segment_seconds"] == 1.92
    weights = rows["speech_small"]["info"][0]["layer_weights"]
    assert len(weights) == 4 and abs(sum(weights) - 1) < 1e-3  # the CNN output and 3 layers
    probe = json.loads((out / "fold1" / "analysis" / "probe.json").read_text())
    assert set(probe) == {"small", "large"} and probe["small"]["code_dim"] == 2 * 16
    grid = json.loads((out / "fold1" / "analysis" / "fusion_grid.json").read_text())
    assert len(grid["valid"]) == 8 and grid["best"] in grid["valid"]
    report = (out / "REPORT.md").read_text()
    assert "Table 3" in report and "fusion_grid.png" in report
    # the speech bundle predicts from audio alone, with the utterance's own speaker embedding
    from sermo.serving.predictor import Predictor

    wav = next(iter(sorted(iemocap_synth.rglob("*.wav"))))
    pred = Predictor.from_pretrained(out / "bundles" / "speech_small").predict_file(wav)
    assert abs(sum(pred.categories.values()) - 1) < 1e-4 and pred.transcript is None


def test_epochs_follow_from_the_papers_iterations():
    from sermo.config import TrainConfig
    from sermo.systems.cross_representation.run import epochs_for

    class Ctx:
        def with_train(self, **kw):
            return TrainConfig(**kw)

    cfg, info = epochs_for(Ctx(), 1_000_000, 4_400, 2)  # the paper's speech model on ~4,400 utterances
    assert cfg.epochs == 455 and info["steps"] >= 1_000_000 and info["derived_epochs"] == 455
    cfg, info = epochs_for(Ctx(), None, 4_400, 2, TrainConfig(epochs=7))
    assert cfg.epochs == 7 and info == {}


@pytest.mark.slow
def test_a_table_corpus_of_ones_own_trains_a_step(tmp_path):
    """No sessions, dialogs or IEMOCAP codes: speaker folds, its own classes, mel and phones
    computed for its audio (issue 21: a KeyError on 'mel_len' before)."""
    from tests.data.corpora.test_own_corpus import write_corpus

    table = write_corpus(tmp_path / "mine")
    speech, text = tiny_speech_model(tmp_path / "hubert"), tiny_text_model(tmp_path / "bert")
    out = run_system("cross_representation", [("mine", table)], folds=[1], out=tmp_path / "run",
                     store=FeatureStore(tmp_path / "store"), progress=False, overrides=[
                         "data.protocol=speaker-folds(3)", "data.label_space=auto",
                         f"data.audio_encoder={speech}", "data.audio_layers=null", f"data.text_encoder={text}",
                         "data.text_layers=[-1]", "train.epochs=1", "train.batch_size=8", "model.text_epochs=1",
                         "model.rows=[speech_small, speech_mel_input, text, fusion]", "model.channels=16",
                         "model.encoder_convs=1", "model.encoder_lstm_layers=1", "model.decoder_lstm1=16",
                         "model.decoder_lstm2=16", "model.decoder_lstm2_layers=1", "model.postnet_convs=2",
                         "model.postnet_channels=16", "model.phone_dim=8", "model.classifier=[16]",
                         "model.text_filters=[8]", "model.probe_folds=0", "model.fusion_grid=[0.0, 1.0]",
                         "model.text_encoders=[]"], profile="demo")
    results = json.loads((out / "results.json").read_text())
    assert results["classes"] == ["bored", "calm", "joyful"]
    rows = {r["name"]: r for r in results["rows"]}
    assert all("ua" in rows[r]["mean"] for r in ("speech_small", "speech_mel_input", "text", "fusion")), rows


def test_declared_rows_plan_the_mel_target_the_speaker_embeddings_and_each_text_encoder():
    """Every speech row reads the mel spectrogram (target; the mel-input row's input too) and the
    whole corpus's speaker embeddings (once); the wav2vec rows the recipe's speech features;
    each Table 4 row its own text encoder."""
    from tests.systems.contract import planned

    uses = planned("cross_representation", "demo", "model.text_encoders=[bert-base]")
    assert uses[("logmel", None)] == (3, False, False) and uses[("resemblyzer", None)] == (0, False, True)
    assert uses[("whisper-tiny.en", None)] == (2, False, False)
    assert uses[("minilm", (-1,))] == (1, False, False) and uses[("bert-base", (-1,))] == (1, False, False)

import numpy as np
import pytest
import torch

from sermo.encoders import EncoderError, get_encoder
from sermo.encoders.speech import SpeechQuantizer, SpeechSSL
from tests.conftest import tiny_speech_model


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    return tiny_speech_model(tmp_path_factory.mktemp("m") / "hubert", attention_mask=False)


@pytest.fixture(scope="module")
def w2v_masked_dir(tmp_path_factory):
    return tiny_speech_model(tmp_path_factory.mktemp("m") / "w2v", kind="wav2vec2", attention_mask=True)


def waves(*seconds, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.1, int(s * 16000)).astype(np.float32) for s in seconds]


def test_every_hidden_state_and_frame_rate(hubert_dir):
    enc = get_encoder(hubert_dir)
    assert enc.modality == "audio" and enc.num_layers == 4 and enc.frame_rate == 800.0
    (out,) = enc.encode_batch(waves(0.5))
    assert out.hidden.shape == (4, 398, 16) and out.hidden.dtype == np.float16
    assert enc.identity.layers is None and len(enc.identity.weights) == 16


def test_no_attention_mask_exact_means_no_padding(hubert_dir):
    enc = get_encoder(hubert_dir, padding="exact")
    assert enc.module.use_attention_mask is False and enc.identity.padding is None
    assert enc.batches([8000, 4000, 8000, 4000, 6000]) == [[1, 3], [4], [0, 2]]  # equal lengths only
    a, b = waves(0.5, 0.25)
    together = enc.encode_batch([a, b])
    alone = [enc.encode(a), enc.encode(b)]
    for x, y in zip(together, alone):
        np.testing.assert_array_equal(x.hidden, y.hidden)


def test_no_attention_mask_buckets_pad_to_a_grid_so_features_never_depend_on_the_batch(hubert_dir):
    enc = get_encoder(hubert_dir)  # padding="bucket", the default
    assert enc.identity.padding == "bucket" and enc.identity.key() != get_encoder(hubert_dir, padding="exact").identity.key()
    # lengths rounded up to 0.25 s (4000 samples) batch together; another bucket is another batch
    assert enc.batches([8000, 3900, 7000, 3000, 4100]) == [[3, 1], [4, 2, 0]]
    a, b, c = waves(0.5, 0.24, 0.2)
    together = enc.encode_batch([a, b, c])
    exact = get_encoder(hubert_dir, padding="exact")
    for x, u in zip(together, (a, b, c)):
        y = enc.encode(u)  # alone: padded to the same 0.25 s boundary, so the same numbers (but for
        # the float rounding of another batch size, below float16's own)
        assert x.hidden.shape == y.hidden.shape == (4, enc.num_frames(len(u)), 16)
        np.testing.assert_allclose(x.hidden.astype(float), y.hidden.astype(float), rtol=2e-3, atol=2e-3)
        # and not the exact (unpadded) features where padding was added: b and c were padded
        differs = not np.allclose(x.hidden.astype(float), exact.encode(u).hidden.astype(float), rtol=2e-3, atol=2e-3)
        assert differs == (len(u) % 4000 != 0)


def test_fine_tuned_encoder_without_mask_runs_a_padded_batch_in_one_pass(hubert_dir):
    calls = {}
    for padding in ("bucket", "exact", "auto"):
        m = SpeechSSL(hubert_dir, padding=padding)
        n = [0]
        m.model.register_forward_hook(lambda *_: n.__setitem__(0, n[0] + 1))
        hidden, frames = m(torch.randn(3, 8000), torch.tensor([8000, 4000, 6000]))
        calls[padding] = n[0]
        assert frames.tolist() == [398, 198, 298] and hidden.shape[2] == 398
    assert calls == {"bucket": 1, "exact": 3, "auto": 3}  # auto: exact on the CPU, a padded batch on a GPU
    with pytest.raises(EncoderError, match="unknown speech padding 'zero'; known: auto, bucket, exact"):
        SpeechSSL(hubert_dir, padding="zero")


def test_attention_mask_models_pad_and_trim(w2v_masked_dir):
    enc = get_encoder(w2v_masked_dir, layers=[0, -1], dtype="float32")
    assert enc.module.use_attention_mask is True
    assert enc.batches([8000, 4000, 6000]) == [[1, 2, 0]]
    a, b = waves(0.5, 0.25)
    together = enc.encode_batch([a, b])
    assert together[1].hidden.shape == (2, 198, 16)
    np.testing.assert_allclose(together[1].hidden, enc.encode(b).hidden, atol=1e-4)
    assert enc.identity.layers == (0, 3)


def test_fine_tuning_touches_only_top_k(hubert_dir):
    m = SpeechSSL(hubert_dir)
    m.set_trainable_layers(2)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.encoder.layers.1.", "model.encoder.layers.2.")) for n in trainable)
    m.set_trainable_layers("all")
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert not any("feature_extractor" in n for n in names) and any("layers.0." in n for n in names)
    x = torch.randn(2, 8000, requires_grad=False)
    hidden, frames = m(x, torch.tensor([8000, 8000]))
    hidden[:, -1].sum().backward()
    assert all(p.grad is None for n, p in m.named_parameters() if "feature_extractor" in n)
    short, frames = m(torch.randn(2, 8000), torch.tensor([8000, 4000]))  # unequal lengths
    assert frames.tolist() == [398, 198] and short.shape[2] == 398
    with pytest.raises(EncoderError, match="3 transformer layers"):
        m.set_trainable_layers(5)


def test_unknown_and_unavailable(monkeypatch):
    with pytest.raises(EncoderError, match="unknown encoder 'huber'; known: hubert-base"):
        get_encoder("huber")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError, match="local folder"):
        get_encoder("hubert-base")


def test_wav2vec2_quantizer_units_and_codevectors(tmp_path):
    folder = tiny_speech_model(tmp_path / "w2v", kind="wav2vec2-pretraining")
    q = SpeechQuantizer(folder)
    wave = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    units = q.units(wave)
    hidden, frames = SpeechSSL(folder)(torch.from_numpy(wave)[None], torch.tensor([8000]))
    assert units.shape == (int(frames[0]),)  # one unit per frame of the encoder's hidden states
    assert units.min() >= 0 and units.max() < 8 * 8
    vec = q.vectors([int(units[0]), int(units[0])])
    assert vec.shape == (2, q.dim) == (2, 6) and np.allclose(vec[0], vec[1])
    # a unit's codevector is its groups' entries concatenated, through project_q
    book = q.model.quantizer.codevectors[0]
    u = int(units[0])
    expect = q.model.project_q(torch.cat([book[u % 8], book[8 + u // 8]])).detach().numpy()
    assert np.allclose(q.vectors([u])[0], expect, atol=1e-6)
    with pytest.raises(EncoderError, match="hubert"):
        SpeechQuantizer(tiny_speech_model(tmp_path / "hubert"))
    with pytest.raises(EncoderError, match="no quantizer"):
        SpeechQuantizer(tiny_speech_model(tmp_path / "w2v-plain", kind="wav2vec2"))


def test_continued_pretraining_trains_saves_and_resumes(tmp_path):
    from safetensors.torch import load_file

    from sermo.encoders.speech import continue_pretraining

    folder = tiny_speech_model(tmp_path / "w2v", kind="wav2vec2-pretraining")
    rng = np.random.default_rng(0)
    waves = [lambda: rng.standard_normal(6000).astype(np.float32)] * 3
    out = continue_pretraining(folder, waves, tmp_path / "continued", steps=2, batch_size=2, progress=False)
    before, after = load_file(f"{folder}/model.safetensors"), load_file(f"{out}/model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and not any(k.startswith("wav2vec2.feature_extractor.") for k in changed)  # the CNN stays
    assert SpeechQuantizer(out).units(waves[0]()).ndim == 1  # a pre-training checkpoint again
    assert not (tmp_path / "continued.partial").exists()
    stamp = (tmp_path / "continued" / "model.safetensors").stat().st_mtime_ns
    assert continue_pretraining(folder, waves, out, steps=50, progress=False) == out  # resumes: done already
    assert (tmp_path / "continued" / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(EncoderError):
        continue_pretraining(tiny_speech_model(tmp_path / "hubert"), waves, tmp_path / "h", steps=1, progress=False)


def test_a_fine_tuned_encoder_trains_in_train_mode_and_a_frozen_one_stays_in_eval(tmp_path):
    """Fine-tuning runs the checkpoint's dropout and time masking (two passes of one input
    differ); a frozen encoder gives the same features every time, whatever mode its parent model
    is put in; and Lightning's fit keeps those modes in the training step."""
    import lightning as L
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    from tests.conftest import TINY_SPEECH

    folder = tmp_path / "hubert-dropout"
    torch.manual_seed(0)  # a checkpoint with the dropout and time masking HuBERT Base has
    HubertModel(HubertConfig(**TINY_SPEECH, hidden_dropout=0.1, attention_dropout=0.1, mask_time_prob=0.2,
                             mask_time_length=2)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(folder)
    x, n = torch.randn(2, 8000), torch.tensor([8000, 8000])

    class Parent(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.ssl = SpeechSSL(str(folder))
            self.ssl.set_trainable_layers(k)
            self.head = torch.nn.Linear(16, 1)

    for k in (0, 2):
        parent = Parent(k).train()
        modes = {m.training for m in parent.ssl.modules()}
        a, b = parent.ssl(x, n)[0], parent.ssl(x, n)[0]
        if k:  # fine-tuned: every module of the encoder trains; dropout and masking act
            assert modes == {True} and not torch.equal(a, b)
        else:  # frozen: eval throughout, the same features twice
            assert modes == {False} and torch.equal(a, b)
        parent.eval()
        assert {m.training for m in parent.ssl.modules()} == {False}
        assert torch.equal(parent.ssl(x, n)[0], parent.ssl(x, n)[0])

    # the frozen CNN front end builds no autograd graph in train mode: backward never runs through
    # the convolutions over raw audio
    parent, out = Parent(2).train(), {}
    parent.ssl.model.feature_extractor.register_forward_hook(lambda m, i, o: out.__setitem__("cnn", o.requires_grad))
    parent.ssl(x, n)
    assert out["cnn"] is False

    seen = []

    class Task(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = Parent(2)

        def training_step(self, batch, i):
            seen.append({m.training for m in self.model.ssl.modules()})
            h, _ = self.model.ssl(x, n)
            return self.model.head(h[:, -1].mean(1)).mean()

        def configure_optimizers(self):
            return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.0)

    L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(Task(), torch.utils.data.DataLoader([0], batch_size=1))
    assert seen == [{True}]

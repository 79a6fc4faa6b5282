"""Checkpoints as the papers' users find them: .bin-only weights, names the Hub has renamed,
XLNet's left padding and trailing special tokens."""

import pickle

import numpy as np
import pytest

from sermo.encoders import get_encoder
from sermo.encoders.base import EncoderError
from tests.conftest import tiny_speech_model, tiny_text_model, tiny_xlnet_model


def test_a_checkpoint_saved_only_as_pytorch_model_bin_is_an_encoder(tmp_path):
    import torch
    from transformers import HubertModel

    folder = tiny_speech_model(tmp_path / "bin")
    model = HubertModel.from_pretrained(folder)
    (tmp_path / "bin" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    enc = get_encoder(folder)
    out = enc.encode(np.random.default_rng(0).normal(size=16000).astype(np.float32) * 0.1)
    safe = get_encoder(tiny_speech_model(tmp_path / "safe"))
    assert out.hidden.shape == safe.encode(np.zeros(16000, np.float32)).hidden.shape == (4, 798, 16)
    assert np.isfinite(np.asarray(out.hidden, float)).all()


class Boom:
    """A pickle that runs code when loaded: it writes a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_bin_file_holding_code_is_refused_and_nothing_runs(tmp_path):
    folder = tiny_text_model(tmp_path / "evil")
    (tmp_path / "evil" / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    with open(tmp_path / "evil" / "pytorch_model.bin", "wb") as f:
        pickle.dump({"embeddings.word_embeddings.weight": Boom(marker)}, f)
    with pytest.raises(EncoderError, match="refusing its weights"):
        get_encoder(folder)
    assert not marker.exists()


def hub_cache(root, repo: str, folder) -> None:
    """Lay ``folder``'s files out as the Hugging Face cache keeps a download of ``repo``."""
    import shutil

    snap = root / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    shutil.copytree(folder, snap)
    (root / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (root / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("0" * 40)


def test_renamed_hub_models_resolve_from_an_old_cache_and_known_names_are_not_refused(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from sermo.encoders import registry

    assert registry.REGISTRY["albert-large-v2"].source == "albert/albert-large-v2"
    assert registry.REGISTRY["bert-base"].source == "google-bert/bert-base-uncased"
    folder = tiny_text_model(tmp_path / "bert")
    cache = tmp_path / "hub"
    cache.mkdir()
    # caches filled before the Hub's rename hold the old id only
    hub_cache(cache, "bert-large-cased", folder)
    hub_cache(cache, "some-old-model", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert get_encoder("bert-large-cased").dim == 16  # Table 4's name, found under its old id
    # a plain name the registry does not know is looked for in the cache before it is refused
    assert get_encoder("some-old-model").dim == 16
    with pytest.raises(EncoderError, match="unknown encoder 'no-such-model'"):
        get_encoder("no-such-model")


def test_xlnet_tokens_come_out_aligned_despite_left_padding_and_trailing_specials(tmp_path):
    enc = get_encoder(tiny_xlnet_model(tmp_path / "xlnet"))
    long, short = enc.encode_batch(["i am so glad the dinner was okay", "you hate"])
    assert short.tokens == ["you", "hate", "<sep>", "<cls>"] and short.word_ids == [0, 1, -1, -1]
    assert long.tokens[-2:] == ["<sep>", "<cls>"] and long.word_ids[:2] == [0, 1]
    alone = enc.encode("you hate")
    assert short.hidden.shape == alone.hidden.shape == (3, 4, 16)
    assert np.allclose(np.asarray(short.hidden, float), np.asarray(alone.hidden, float), atol=2e-3)

"""Shared fixtures: small built-in corpora, synthesised once per test session."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sermo.data.synth import synthesize_corpus


@pytest.fixture(scope="session")
def iemocap_synth(tmp_path_factory):
    """A 200-utterance built-in corpus in the IEMOCAP layout (seed 1)."""
    root = tmp_path_factory.mktemp("synth") / "iemocap"
    synthesize_corpus("iemocap", root, utterances=200, seed=1, progress=False)
    return root


@pytest.fixture(scope="session")
def msp_synth(tmp_path_factory):
    """A 160-utterance built-in corpus in the MSP-Podcast layout (seed 2)."""
    root = tmp_path_factory.mktemp("synth") / "msp"
    synthesize_corpus("msp-podcast", root, utterances=160, seed=2, progress=False)
    return root


def write_tone(path, seconds=1.0, sr=16000, channels=1, freq=220.0, **kw):
    """Write a sine tone (a tiny real audio file) and return its path."""
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, **kw)
    return path


TINY_SPEECH = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=24,
                   conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                   num_conv_pos_embedding_groups=2)


def tiny_speech_model(folder, *, kind="hubert", attention_mask=False, seed=0):
    """Save a randomly initialised tiny HF speech model (frame rate 800 Hz) with its feature
    extractor to ``folder``, as a real checkpoint folder would look. ``kind``: ``hubert``,
    ``wav2vec2`` or ``wav2vec2-pretraining`` (with the quantizer)."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from transformers import Wav2Vec2ForPreTraining

    torch.manual_seed(seed)
    cfg_cls, model_cls = (HubertConfig, HubertModel) if kind == "hubert" else (Wav2Vec2Config, Wav2Vec2Model)
    extra = {"feat_extract_norm": "layer", "do_stable_layer_norm": True} if attention_mask else {}
    if kind == "wav2vec2-pretraining":  # with its quantizer (2 groups of 8 codes), as pre-training checkpoints are
        model_cls = Wav2Vec2ForPreTraining
        extra.update(num_codevector_groups=2, num_codevectors_per_group=8, codevector_dim=8, proj_codevector_dim=6)
    model = model_cls(cfg_cls(**TINY_SPEECH, **extra)).eval()
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=attention_mask, do_normalize=True).save_pretrained(folder)
    return str(folder)


def tiny_text_model(folder, *, seed=0):
    """Save a randomly initialised tiny BERT with a small word-piece vocabulary to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "am", "so", "glad", "the", "dinner", "was",
             "terrible", "okay", ".", ",", "!", "won", "##der", "##ful", "you", "hate", "this"]
    folder.mkdir(parents=True, exist_ok=True)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(folder)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=24, max_position_embeddings=64)).eval().save_pretrained(folder)
    return str(folder)


def tiny_whisper_model(folder, *, seed=0, positions: int = 64):
    """Save a randomly initialised tiny Whisper (1+1 layers, d_model 16) with a small byte-level
    BPE tokenizer, processor and generation config to ``folder``; ``positions``: the decoder's
    (a random decoder never says end-of-text, so it decodes as many tokens as it may)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperTokenizerFast)

    torch.manual_seed(seed)
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
                "<|nocaptions|>", "<|notimestamps|>", "<|startofprev|>", "<|startoflm|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["the cat sat on the mat", "hello world this is sermo"],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ids = {s: tok.token_to_id(s) for s in specials}
    eot = ids["<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    WhisperTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                         unk_token="<|endoftext|>", pad_token="<|endoftext|>").save_pretrained(folder)
    cfg = WhisperConfig(vocab_size=tok.get_vocab_size(), num_mel_bins=80, d_model=16, encoder_layers=1,
                        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, max_source_positions=1500, max_target_positions=positions, pad_token_id=eot,
                        bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=ids["<|startoftranscript|>"],
                        suppress_tokens=[], begin_suppress_tokens=[])
    model = WhisperForConditionalGeneration(cfg).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=eot, pad_token_id=eot, max_length=min(24, positions),
        no_timestamps_token_id=ids["<|notimestamps|>"], lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}, is_multilingual=True)
    model.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return str(folder)


def small_iemocap(root, out, per_speaker: int = 5):
    """A manifest of the first ``per_speaker`` utterances of each speaker of an IEMOCAP-layout
    corpus (all 5 sessions, a few dozen utterances) saved to ``out``, for smoke runs."""
    from sermo.data.corpora import prepare

    manifest = prepare("iemocap", root)
    manifest.subset(manifest.df.groupby("speaker").head(per_speaker)["id"].tolist()).save(out)
    return out


def tiny_xlnet_model(folder, *, seed=0):
    """Save a randomly initialised tiny XLNet whose tokenizer, like XLNet's, pads on the left and
    puts its special tokens last (``<sep> <cls>``)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, XLNetConfig, XLNetModel

    torch.manual_seed(seed)
    words = ["<pad>", "<unk>", "<sep>", "<cls>", "<mask>", "i", "am", "so", "glad", "the", "dinner", "was",
             "terrible", "okay", "you", "hate", "this"]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A <sep> <cls>", pair="$A <sep> $B <sep> <cls>",
                                                       special_tokens=[("<sep>", 2), ("<cls>", 3)])
    folder.mkdir(parents=True, exist_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", sep_token="<sep>",
                            cls_token="<cls>", mask_token="<mask>", padding_side="left").save_pretrained(folder)
    XLNetModel(XLNetConfig(vocab_size=len(words), d_model=16, n_layer=2, n_head=2, d_inner=24)).eval() \
        .save_pretrained(folder)
    return str(folder)

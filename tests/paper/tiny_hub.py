"""A Hugging Face cache of tiny, randomly initialised models under the papers' own Hub ids.

Each entry has the architecture of the checkpoint the paper profiles name (model class, number
of transformer layers, conv front end and frame rate, feature extractor's attention-mask and
normalisation flags, quantizer where the real checkpoint has one, tokenizer family and its
special tokens) at a width of 16-32, so every ``paper`` profile runs unchanged on 2 CPU cores
with ``HF_HUB_OFFLINE=1``: what the real weights would compute is replaced, nothing of the path
they take through sermo is.

``build_tiny_hub(root, words)`` lays the cache out as ``huggingface_hub`` keeps downloads
(``models--org--name/snapshots/<rev>/``, ``refs/main``); point ``HF_HUB_CACHE`` at it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

REVISION = "0" * 40

# the wav2vec 2.0 / HuBERT convolutional front end: 7 layers, stride 320 (50 frames a second)
CONV = dict(conv_dim=(8,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2))
SPEECH = dict(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_conv_pos_embeddings=16,
              num_conv_pos_embedding_groups=2, **CONV)

# Hub id -> (architecture, its settings): real layer counts, tiny widths
SPEECH_MODELS = {
    # HuBERT / wav2vec 2.0 Base: group-norm front end, no attention mask (their model cards: pad
    # with zeros, pass no mask)
    "facebook/hubert-base-ls960": ("hubert", dict(num_hidden_layers=12), False),
    "facebook/wav2vec2-base-960h": ("wav2vec2", dict(num_hidden_layers=12), False),
    "ntu-spml/distilhubert": ("hubert", dict(num_hidden_layers=2), False),
    # the large checkpoints: layer-norm front end and an attention mask
    "facebook/hubert-large-ll60k": ("hubert", dict(num_hidden_layers=24), True),
    "facebook/wav2vec2-large-lv60": ("wav2vec2-pretraining", dict(num_hidden_layers=24), True),
    "facebook/wav2vec2-large-robust": ("wav2vec2-pretraining", dict(num_hidden_layers=24), True),
    "microsoft/wavlm-base-plus": ("wavlm", dict(num_hidden_layers=12), False),
}

TEXT_MODELS = {
    "google-bert/bert-base-uncased": ("bert", 12, True),
    "google-bert/bert-large-uncased": ("bert", 24, True),
    "google-bert/bert-large-cased": ("bert", 24, False),
    "google-bert/bert-large-uncased-whole-word-masking": ("bert", 24, True),
    "huawei-noah/TinyBERT_General_4L_312D": ("bert", 4, True),
    "albert/albert-large-v2": ("albert", 24, True),
    "google/electra-large-discriminator": ("electra", 24, True),
    "FacebookAI/roberta-large": ("roberta", 24, False),
    "xlnet/xlnet-large-cased": ("xlnet", 24, False),
}

ASR_MODELS = ("openai/whisper-base", "openai/whisper-tiny")


def corpus_words(texts) -> list[str]:
    """The lower-case words of ``texts`` (sorted, unique): a vocabulary the tiny tokenizers know."""
    words: set[str] = set()
    for t in texts:
        words.update(re.findall(r"[a-z']+", str(t).lower()))
    return sorted(words)


def _snapshot(root: Path, repo: str) -> Path:
    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / REVISION
    snap.mkdir(parents=True, exist_ok=True)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(REVISION)
    return snap


def _speech(folder: Path, kind: str, layers: dict, attention_mask: bool, seed: int) -> None:
    import torch
    from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining,
                              Wav2Vec2Model, WavLMConfig, WavLMModel)

    torch.manual_seed(seed)
    extra = {"feat_extract_norm": "layer", "do_stable_layer_norm": True} if attention_mask else {}
    if kind == "wav2vec2-pretraining":  # pre-training checkpoints keep their quantizer
        extra.update(num_codevector_groups=2, num_codevectors_per_group=16, codevector_dim=8, proj_codevector_dim=8)
    cfg_cls, model_cls = {"hubert": (HubertConfig, HubertModel), "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
                          "wav2vec2-pretraining": (Wav2Vec2Config, Wav2Vec2ForPreTraining),
                          "wavlm": (WavLMConfig, WavLMModel)}[kind]
    model_cls(cfg_cls(**SPEECH, **layers, **extra)).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=attention_mask, do_normalize=True).save_pretrained(folder)


def _wordpiece(words, *, lower: bool, cls: str, sep: str, pad: str, unk: str, mask: str, template=None,
               padding_side: str = "right"):
    """A fast WordPiece tokenizer over ``words`` (plus single letters and their ``##`` forms, so
    no word is unknown) with the given special tokens and post-processing template."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["'", ".", ",", "!", "?"]
    specials = [pad, unk, cls, sep, mask]
    vocab: dict[str, int] = {}
    for w in [*specials, *letters, *(f"##{c}" for c in letters), *words,
              *(w.capitalize() for w in words if not lower)]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase()] if lower else [])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    single, pair = template or (f"{cls} $A {sep}", f"{cls} $A {sep} $B {sep}")
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                       special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, unk_token=unk, cls_token=cls, sep_token=sep,
                                   mask_token=mask, padding_side=padding_side), len(vocab)


def _text(folder: Path, kind: str, layers: int, lower: bool, words, seed: int) -> None:
    import torch
    from transformers import (AlbertConfig, AlbertModel, BertConfig, BertModel, ElectraConfig, ElectraModel,
                              RobertaConfig, RobertaModel, XLNetConfig, XLNetModel)

    torch.manual_seed(seed)
    small = dict(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32)
    if kind == "roberta":
        tok, n = _wordpiece(words, lower=lower, cls="<s>", sep="</s>", pad="<pad>", unk="<unk>", mask="<mask>",
                            template=("<s> $A </s>", "<s> $A </s> </s> $B </s>"))
        model = RobertaModel(RobertaConfig(vocab_size=n, max_position_embeddings=514, pad_token_id=0, **small))
    elif kind == "xlnet":  # XLNet pads on the left and puts its special tokens last
        tok, n = _wordpiece(words, lower=lower, cls="<cls>", sep="<sep>", pad="<pad>", unk="<unk>", mask="<mask>",
                            template=("$A <sep> <cls>", "$A <sep> $B <sep> <cls>"), padding_side="left")
        model = XLNetModel(XLNetConfig(vocab_size=n, d_model=16, n_layer=layers, n_head=2, d_inner=32))
    else:
        tok, n = _wordpiece(words, lower=lower, cls="[CLS]", sep="[SEP]", pad="[PAD]", unk="[UNK]", mask="[MASK]")
        if kind == "albert":
            model = AlbertModel(AlbertConfig(vocab_size=n, embedding_size=8, max_position_embeddings=512, **small))
        elif kind == "electra":
            model = ElectraModel(ElectraConfig(vocab_size=n, embedding_size=16, max_position_embeddings=512, **small))
        else:
            model = BertModel(BertConfig(vocab_size=n, max_position_embeddings=512, **small))
    tok.save_pretrained(folder)
    model.eval().save_pretrained(folder)


def build_tiny_hub(root, words, *, seed: int = 0) -> Path:
    """Write the tiny cache under ``root`` (created) and return it. ``words``: the vocabulary of
    the corpora the models will read (:func:`corpus_words`)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i, (repo, (kind, layers, mask)) in enumerate(SPEECH_MODELS.items()):
        _speech(_snapshot(root, repo), kind, layers, mask, seed + i)
    for i, (repo, (kind, layers, lower)) in enumerate(TEXT_MODELS.items()):
        _text(_snapshot(root, repo), kind, layers, lower, words, seed + 100 + i)
    from tests.conftest import tiny_whisper_model

    for i, repo in enumerate(ASR_MODELS):
        snap = _snapshot(root, repo)
        shutil.rmtree(snap)
        # 12 tokens a window: a random decoder never ends a segment, and Whisper's long-form loop then
        # decodes each short utterance many times over (the real checkpoints end theirs)
        tiny_whisper_model(snap, seed=seed + 200 + i, positions=16)
    return root

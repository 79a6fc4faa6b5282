"""``sermo export BUNDLE --format onnx --out DIR``: a bundle as ONNX graphs that predict without
sermo's training code or torch (:mod:`sermo.serving.runtime` reads them).

Separate graphs, because the frozen features between them are stored in training at a lower
precision and averaged over frames, which the runtime repeats exactly as the feature store did:

- ``encoder.onnx``: 16 kHz mono samples ``(samples,)`` to the kept hidden states
  ``(layers, frames, dim)`` (Whisper: one window of at most 30 s; the runtime joins windows as
  sermo's encoder does; a speech SSL model: the samples zero-padded as its features were;
  log-mel: the spectrogram), with a dynamic number of samples;
- ``text_encoder.onnx`` (rows that read a transcript): token ids ``(1, tokens)`` and their
  attention mask to the kept hidden states ``(layers, tokens, dim)``, with ``tokenizer.json``,
  the text encoder's own tokenizer (the ``tokenizers`` library reads it, no torch): the text
  side is the transcript, split on whitespace as sermo splits it, tokenized, encoded;
- ``head.onnx``: the features (``audio`` ``(1, layers, frames, dim)`` with ``audio_mask``;
  ``text`` ``(1, layers, tokens, dim)`` with ``text_mask`` and ``text_words``, each token's word
  index or -1) to ``dims`` (``(1, 3)`` on [0, 1]) and/or ``probs`` (``(1, classes)``).

``sermo.json`` beside them says what the runtime needs: the sample rate, the features' storage
dtype, frame pooling and cap, the label scale, class names, what the model was trained on.
Rows that read a speaker embedding, fine-tune an encoder inside the model, or read text through
a byte-level BPE tokenizer are refused by name (see :func:`exportable`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sermo.data.audio import SAMPLE_RATE
from sermo.data.io import write_text_atomic
from sermo.serving.core import ExportError

FORMAT_VERSION = 1
"""The exported folder's layout version (``sermo.json``'s ``format``)."""
PARTS = ("encoder.onnx", "text_encoder.onnx", "tokenizer.json", "head.onnx", "sermo.json")
"""What an exported folder holds."""


def exportable(predictor) -> str:
    """Why a loaded :class:`~sermo.serving.predictor.Predictor` cannot be exported ("" when it can)."""
    from sermo.encoders.text import HFTextEncoder

    spec = predictor.inputs
    if spec.wave or spec.tokens:
        return ("it fine-tunes an encoder inside the model (samples or token ids): only rows over frozen features "
                "export")
    if spec.speaker:
        return "it reads a speaker embedding (Resemblyzer), which has no ONNX export here"
    if spec.audio is None and spec.text is None:
        return "it reads no features"
    if spec.audio is not None and _encoder_kind(predictor.audio_encoder) is None:
        return f"its audio encoder {spec.audio.encoder!r} has no ONNX export here (log-mel, Whisper and speech SSL models do)"
    if spec.text is not None:
        enc = predictor.text_encoder
        if not isinstance(enc, HFTextEncoder) or not getattr(enc.tokenizer, "is_fast", False):
            return f"its text encoder {spec.text.encoder!r} has no fast tokenizer to ship beside the graph"
        if enc.config.model_type in BPE_PREFIX:
            return (f"its text encoder {spec.text.encoder!r} tokenizes with byte-level BPE and a prefix space, which "
                    "the exported tokenizer does not reproduce yet")
    return ""


BPE_PREFIX = ("roberta", "gpt2", "bart", "longformer", "deberta")
"""Text models whose tokenizer sermo calls with ``add_prefix_space`` (not exported)."""


def _encoder_kind(encoder) -> str | None:
    from sermo.encoders.acoustic import LogMelEncoder
    from sermo.encoders.speech import HFSpeechEncoder, SpeechSSL
    from sermo.encoders.whisper import WhisperSpeech

    if isinstance(encoder, LogMelEncoder):
        return "logmel"
    if isinstance(encoder, HFSpeechEncoder):
        if isinstance(encoder.module, WhisperSpeech):
            return "whisper"
        if isinstance(encoder.module, SpeechSSL):
            return "ssl"
    return None


class _LogMelGraph(nn.Module):
    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        from sermo.encoders.acoustic import log_mel_tensor
        from sermo.encoders.spectrum import dft_power

        return log_mel_tensor(samples, power=dft_power)[None]  # (1, frames, 80)


class _WhisperGraph(nn.Module):
    def __init__(self, module, keep: list[int]):
        super().__init__()
        self.module, self.keep = module, keep

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        from sermo.encoders.spectrum import dft_power

        return self.module._window(samples, dft_power)[self.keep]  # (layers, frames, dim) of one window


class _SSLGraph(nn.Module):
    def __init__(self, module, keep: list[int]):
        super().__init__()
        self.module, self.keep = module, keep

    def forward(self, samples: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, frames = self.module.encode_padded(samples[None], length)
        return hidden[0, self.keep], frames


class _TextGraph(nn.Module):
    def __init__(self, model, keep: list[int]):
        super().__init__()
        self.model, self.keep = model, keep

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return torch.stack(out.hidden_states, dim=1)[0, self.keep]  # (layers, tokens, dim)


class _HeadGraph(nn.Module):
    """The row's model on a batch of one, built from the named input tensors."""

    def __init__(self, model: nn.Module, pool: int, inputs: tuple[str, ...], outputs: tuple[str, ...]):
        super().__init__()
        self.model, self.pool, self.inputs, self.outputs = model, pool, inputs, outputs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from sermo.data.batch import Batch

        named: dict[str, Any] = dict(zip(self.inputs, tensors))
        batch = Batch(ids=["x"], dims=torch.zeros(1, 3), category=torch.zeros(1, dtype=torch.long),
                      audio_pool=self.pool, **named)
        out = self.model(batch)
        result = []
        if "dims" in self.outputs:
            result.append(out.dims.float())
        if "probs" in self.outputs:
            result.append(torch.softmax(out.logits.float(), dim=-1))
        return tuple(result)


def export_bundle(bundle: str | Path, out: str | Path, *, fmt: str = "onnx") -> Path:
    """Export a bundle folder to ``out`` (see the module's docstring) and return ``out``. The
    graphs are written beside ``out`` first and moved in whole: an interrupted export leaves no
    half-written folder.

    Raises:
        ExportError: another format, a bundle whose row cannot be exported (the reason named),
            or ``out`` holding anything but an earlier export (nothing is overwritten but that).
    """
    import warnings

    from sermo.serving.predictor import Predictor

    if fmt != "onnx":
        raise ExportError(f"format {fmt!r}: sermo exports onnx")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(f.name not in PARTS for f in out.iterdir())):
        raise ExportError(f"{out} holds other files than an earlier export: give a new or empty folder")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the built-in corpus caveat is carried into sermo.json
        predictor = Predictor.from_pretrained(bundle, accelerator="cpu")
    why = exportable(predictor)
    if why:
        raise ExportError(f"{bundle}: cannot export row {predictor.config.row!r} of {predictor.config.system}: {why}")
    spec, enc = predictor.inputs, predictor.audio_encoder
    kind, audio = (_encoder_kind(enc) if enc is not None else None), spec.audio
    keep = [int(i) for i in enc.layers] if enc is not None else []
    tmp = out.with_name(out.name + ".partial")  # sermo's own scratch folder beside the export
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        outputs = _write_graphs(predictor, kind, audio, keep, tmp)
    except ExportError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"{bundle}: cannot export row {predictor.config.row!r} of {predictor.config.system}: "
                          f"{exc}") from None
    except Exception as exc:  # the exporter's own errors: an operator or a shape it cannot trace
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"{bundle}: row {predictor.config.row!r} of {predictor.config.system} could not be traced "
                          f"to ONNX ({_first_line(exc)})") from exc
    cfg = predictor.config
    meta = {"format": FORMAT_VERSION, "system": cfg.system, "row": cfg.row, "sample_rate": SAMPLE_RATE,
            "modalities": list(predictor.modalities), "outputs": list(outputs),
            "scale": list(predictor.scale) if predictor.scale else None, "classes": list(predictor.space.classes),
            "encoder": {"kind": kind, "name": audio.encoder, "layers": keep, "dtype": audio.dtype,
                        "pool": int(audio.pool), "padding": getattr(enc, "padding", None),
                        "frame_rate": audio.frame_rate, **_windows(kind)} if audio is not None else None,
            "text": {"name": spec.text.encoder, "layers": [int(i) for i in predictor.text_encoder.layers],
                     "dtype": spec.text.dtype, "max_tokens": int(predictor.text_encoder.max_tokens),
                     "words": "the transcript split on whitespace"} if spec.text is not None else None,
            "max_frames": int(spec.max_frames), "window_seconds": predictor.window_seconds,
            "trained_on": predictor.trained_on, "caveat": predictor.caveat}
    write_text_atomic(tmp / "sermo.json", json.dumps(meta, indent=1))
    if out.exists():  # an earlier export (checked above): its parts are replaced
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _write_graphs(predictor, kind: str | None, audio, keep: list[int], folder: Path) -> tuple[str, ...]:
    """The graphs (and the tokenizer) in ``folder``; the head's outputs (``dims``, ``probs``)."""
    enc, text = predictor.audio_encoder, predictor.inputs.text
    samples = torch.randn(2 * SAMPLE_RATE) * 0.1
    n = torch.export.Dim("samples", min=400, max=30 * SAMPLE_RATE if kind == "whisper" else 3600 * SAMPLE_RATE)
    if kind == "logmel":
        _export(_LogMelGraph(), (samples,), folder / "encoder.onnx", ["samples"], ["hidden"], ({0: n},))
    elif kind == "whisper":
        _export(_WhisperGraph(enc.module, keep).eval(), (samples,), folder / "encoder.onnx", ["samples"], ["hidden"],
                ({0: n},))
    elif kind == "ssl":
        _export(_SSLGraph(enc.module, keep).eval(), (samples, torch.tensor([len(samples)])), folder / "encoder.onnx",
                ["samples", "length"], ["hidden", "frames"], ({0: n}, None))
    example: dict[str, Any] = {}
    dynamic: list[dict] = []
    if audio is not None:
        frames = torch.export.Dim("frames", min=2, max=max(int(predictor.inputs.max_frames), 3))
        example.update(audio=torch.randn(1, audio.num_layers, 40, audio.dim),
                       audio_mask=torch.ones(1, 40, dtype=torch.bool))
        dynamic += [{2: frames}, {1: frames}]
    if text is not None:
        tenc = predictor.text_encoder
        tokens = torch.export.Dim("tokens", min=2, max=max(int(tenc.max_tokens), 3))
        ids = torch.tensor([tenc.tokenizer("an example sentence of several words".split(),
                                           is_split_into_words=True)["input_ids"]])
        _export(_TextGraph(tenc.model, [int(i) for i in tenc.layers]).eval(), (ids, torch.ones_like(ids)),
                folder / "text_encoder.onnx", ["input_ids", "attention_mask"], ["hidden"],
                ({1: tokens}, {1: tokens}))
        tenc.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
        example.update(text=torch.randn(1, text.num_layers, 12, text.dim), text_mask=torch.ones(1, 12, dtype=torch.bool),
                       text_words=torch.arange(12)[None] - 1)
        dynamic += [{2: tokens}, {1: tokens}, {1: tokens}]
    model = predictor.model.float().eval()
    with torch.inference_mode():
        probe = model(_batch(example, audio.pool if audio is not None else 1))
    outputs = tuple(name for name, present in (("dims", probe.dims is not None and probe.dims.shape[1] == 3),
                                               ("probs", probe.logits is not None)) if present)
    head = _HeadGraph(model, audio.pool if audio is not None else 1, tuple(example), outputs).eval()
    _export(head, tuple(example.values()), folder / "head.onnx", list(example), list(outputs),
            (tuple(dynamic),))  # forward(*tensors): one argument, a tuple
    with torch.inference_mode():
        expected = [t.numpy() for t in head(*example.values())]
    _check_runs(folder, {k: v.numpy() for k, v in example.items()}, expected)
    return outputs


def _check_runs(folder: Path, example: dict, expected: list) -> None:
    """onnxruntime loads every graph and the head gives the torch head's outputs on the example
    (within 1e-3: the same function; the precision on real inputs is what the tests measure), else
    :class:`ExportError` (a graph with an operator onnxruntime lacks, or one traced wrong)."""
    import numpy as np
    import onnxruntime as ort

    for name in ("encoder.onnx", "text_encoder.onnx", "head.onnx"):
        if not (folder / name).is_file():
            continue
        try:
            session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types
            raise ExportError(f"onnxruntime cannot run its {name} ({_first_line(exc)})") from exc
        if name == "head.onnx":
            got = session.run(None, example)
            worst = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
            if worst > 1e-3:
                raise ExportError(f"its exported head differs from the model by {worst:.1e} on an example")


def _first_line(exc: BaseException) -> str:
    """An exception's first line, and its root cause's, without terminal colour codes."""
    import re

    def line(e: BaseException) -> str:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
        return text.splitlines()[0][:200] if text else type(e).__name__

    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    return line(exc) + (f"; {type(root).__name__}: {line(root)}" if root is not exc else "")


def _windows(kind: str | None) -> dict:
    """How the runtime feeds Whisper's graph: windows of at most ``window_samples`` joined, each
    of at least ``min_samples`` (one encoder frame), as :class:`~sermo.encoders.whisper.WhisperSpeech` does."""
    from sermo.encoders.whisper import HOP, WINDOW_SECONDS

    return {"window_samples": WINDOW_SECONDS * SAMPLE_RATE, "min_samples": 2 * HOP} if kind == "whisper" else {}


def _batch(example: dict[str, Any], pool: int):
    """A batch of one made of the head's example inputs (to see which outputs the row gives)."""
    from sermo.data.batch import Batch

    return Batch(ids=["x"], dims=torch.zeros(1, 3), category=torch.zeros(1, dtype=torch.long), audio_pool=pool,
                 **example)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic) -> None:
    """One graph, with the named inputs' dynamic axes, its weights inside the file."""
    import logging
    import warnings

    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # optional operators of packages sermo does not use (torchvision)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, input_names=inputs, output_names=outputs,
                                        dynamic_shapes=dynamic, external_data=False, optimize=True, verbose=False)
    finally:
        quiet.setLevel(level)
    if program is None:  # pragma: no cover - the dynamo exporter always returns its program
        raise ExportError(f"torch.onnx.export gave no program for {path.name}")
    program.save(str(path), external_data=False)

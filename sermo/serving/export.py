"""``sermo export BUNDLE --format onnx --out DIR``: a bundle as ONNX graphs that predict without
sermo's training code or torch (:mod:`sermo.serving.runtime` reads them).

Two graphs, because the frozen features between them are stored in training at a lower
precision and averaged over frames, which the runtime repeats exactly as the feature store did:

- ``encoder.onnx``: 16 kHz mono samples ``(samples,)`` to the kept hidden states
  ``(layers, frames, dim)`` (Whisper: one window of at most 30 s; the runtime joins windows as
  sermo's encoder does; a speech SSL model: the samples zero-padded as its features were;
  log-mel: the spectrogram), with a dynamic number of samples;
- ``head.onnx``: the features ``(1, layers, frames, dim)`` and their mask ``(1, frames)`` to
  ``dims`` (``(1, 3)`` on [0, 1]) and/or ``probs`` (``(1, classes)``), frames dynamic.

``sermo.json`` beside them says what the runtime needs: the sample rate, the feature's storage
dtype, frame pooling and cap, the label scale, class names, what the model was trained on.
Rows that read text, a speaker embedding, or fine-tune an encoder on samples are refused by
name (see :func:`exportable`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from sermo.data.audio import SAMPLE_RATE
from sermo.data.io import write_text_atomic
from sermo.serving.core import ExportError

FORMAT_VERSION = 1
"""The exported folder's layout version (``sermo.json``'s ``format``)."""
PARTS = ("encoder.onnx", "head.onnx", "sermo.json")
"""What an exported folder holds."""


def exportable(predictor) -> str:
    """Why a loaded :class:`~sermo.serving.predictor.Predictor` cannot be exported ("" when it can)."""
    spec = predictor.inputs
    if spec.text is not None or spec.tokens:
        return ("it reads text (a transcript's token features): sermo exports rows that read audio features only; "
                "a text row needs the text encoder and its tokenizer beside the graph")
    if spec.wave:
        return "it fine-tunes a speech encoder on samples inside the model: only rows over frozen features export"
    if spec.speaker:
        return "it reads a speaker embedding (Resemblyzer), which has no ONNX export here"
    if spec.audio is None:
        return "it reads no audio"
    kind = _encoder_kind(predictor.audio_encoder)
    if kind is None:
        return f"its audio encoder {spec.audio.encoder!r} has no ONNX export here (log-mel, Whisper and speech SSL models do)"
    return ""


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


class _HeadGraph(nn.Module):
    def __init__(self, model: nn.Module, pool: int, outputs: tuple[str, ...]):
        super().__init__()
        self.model, self.pool, self.outputs = model, pool, outputs

    def forward(self, audio: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from sermo.data.batch import Batch

        batch = Batch(ids=["x"], dims=torch.zeros(1, 3), category=torch.zeros(1, dtype=torch.long), audio=audio,
                      audio_mask=mask, audio_pool=self.pool)
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
    kind, audio = _encoder_kind(enc), spec.audio
    assert audio is not None, "exportable() checked that the row reads audio features"
    keep = [int(i) for i in enc.layers]
    tmp = out.with_name(out.name + ".partial")  # sermo's own scratch folder beside the export
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        outputs = _write_graphs(predictor, kind, audio, keep, tmp)
    except ExportError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:  # the exporter's own errors: an operator or a shape it cannot trace
        shutil.rmtree(tmp, ignore_errors=True)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{bundle}: row {predictor.config.row!r} of {predictor.config.system} could not be traced "
                          f"to ONNX ({first})") from exc
    cfg = predictor.config
    meta = {"format": FORMAT_VERSION, "system": cfg.system, "row": cfg.row, "sample_rate": SAMPLE_RATE,
            "modalities": list(predictor.modalities), "outputs": list(outputs),
            "scale": list(predictor.scale) if predictor.scale else None, "classes": list(predictor.space.classes),
            "encoder": {"kind": kind, "name": audio.encoder, "layers": keep, "dtype": audio.dtype,
                        "pool": int(audio.pool), "padding": getattr(enc, "padding", None),
                        "frame_rate": audio.frame_rate},
            "max_frames": int(spec.max_frames), "window_seconds": predictor.window_seconds,
            "trained_on": predictor.trained_on, "caveat": predictor.caveat}
    write_text_atomic(tmp / "sermo.json", json.dumps(meta, indent=1))
    if out.exists():  # an earlier export (checked above): its parts are replaced
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _write_graphs(predictor, kind: str | None, audio, keep: list[int], folder: Path) -> tuple[str, ...]:
    """``encoder.onnx`` and ``head.onnx`` in ``folder``; the head's outputs (``dims``, ``probs``)."""
    enc = predictor.audio_encoder
    samples = torch.randn(2 * SAMPLE_RATE) * 0.1
    n = torch.export.Dim("samples", min=400, max=30 * SAMPLE_RATE if kind == "whisper" else 3600 * SAMPLE_RATE)
    if kind == "logmel":
        _export(_LogMelGraph(), (samples,), folder / "encoder.onnx", ["samples"], ["hidden"], ({0: n},))
    elif kind == "whisper":
        _export(_WhisperGraph(enc.module, keep).eval(), (samples,), folder / "encoder.onnx", ["samples"], ["hidden"],
                ({0: n},))
    else:
        _export(_SSLGraph(enc.module, keep).eval(), (samples, torch.tensor([len(samples)])), folder / "encoder.onnx",
                ["samples", "length"], ["hidden", "frames"], ({0: n}, None))
    model = predictor.model.float().eval()
    with torch.inference_mode():
        probe = model(_probe_batch(audio))
    outputs = tuple(name for name, present in (("dims", probe.dims is not None and probe.dims.shape[1] == 3),
                                               ("probs", probe.logits is not None)) if present)
    frames = torch.export.Dim("frames", min=2, max=max(int(predictor.inputs.max_frames), 3))
    features = torch.randn(1, audio.num_layers, 40, audio.dim)
    _export(_HeadGraph(model, audio.pool, outputs).eval(), (features, torch.ones(1, 40, dtype=torch.bool)),
            folder / "head.onnx", ["audio", "mask"], list(outputs), ({2: frames}, {1: frames}))
    return outputs


def _probe_batch(audio):
    """A batch of random features shaped as the row reads them (to see which outputs it gives)."""
    from sermo.data.batch import Batch

    return Batch(ids=["x"], dims=torch.zeros(1, 3), category=torch.zeros(1, dtype=torch.long),
                 audio=torch.randn(1, audio.num_layers, 40, audio.dim),
                 audio_mask=torch.ones(1, 40, dtype=torch.bool), audio_pool=audio.pool)


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

"""The command line's serving side: ``sermo predict``, ``sermo serve`` and ``sermo export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sermo.cli_args import UsageError, number


def load_predictor(path: str, *, asr: str | None = None, accelerator: str = "auto"):
    """A bundle folder's :class:`~sermo.serving.predictor.Predictor`, or an exported folder's
    :class:`~sermo.serving.runtime.OnnxPredictor` (``sermo export`` wrote ``sermo.json``)."""
    if (Path(path) / "sermo.json").is_file():
        if asr:
            raise UsageError(f"{path} is an exported model, which has no speech recogniser: --asr does not apply "
                             "(a model that reads text takes --transcript)")
        from sermo.serving.runtime import OnnxPredictor

        return OnnxPredictor(path)
    from sermo.serving.predictor import Predictor

    return Predictor.from_pretrained(path, asr=asr, accelerator=accelerator)


def _cmd_predict(args: argparse.Namespace) -> int:
    from sermo.data.audio import AudioError
    from sermo.serving.files import audio_files
    from sermo.serving.output import format_predictions
    from sermo.serving.segment import Segmenter

    predictor = load_predictor(args.bundle, asr=args.asr, accelerator=args.accelerator)
    files = audio_files(args.inputs)
    if not files:
        raise UsageError(f"no audio files in {' '.join(args.inputs)} (looked for .wav .flac .ogg .mp3 .opus .aif)")
    segmenter = Segmenter(args.max_seconds) if args.segment else None
    rows, skipped, summaries = [], 0, {}
    for path in files:
        try:
            if segmenter is not None:
                result = segmenter.predict_file(predictor, path)
                preds, summaries[str(path)] = result.segments, result.summary
            else:
                preds = [predictor.predict_file(path, transcript=args.transcript)]
        except AudioError as exc:  # a broken file is reported; the others still get results
            print(f"sermo: skipped {exc}", file=sys.stderr)
            skipped += 1
            continue
        rows += preds
    if rows or args.format == "json":
        print(format_predictions(rows, summaries, args.format, bundle=str(args.bundle)), end="")
    if skipped:
        print(f"sermo: {skipped} of {len(files)} file(s) skipped", file=sys.stderr)
    return 0 if rows or not files else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from sermo.serving.service import serve

    serve(args.bundle, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
          max_seconds=args.max_seconds, accelerator=args.accelerator)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from sermo.serving.export import export_bundle

    out = export_bundle(args.bundle, args.out, fmt=args.format)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"exported {args.bundle} to {out} ({size / 1e6:.1f} MB): predict without torch with "
          f"`sermo predict {out} FILE` or sermo.serving.runtime.OnnxPredictor({str(out)!r})")
    return 0


def add_serving_commands(sub) -> None:
    """The ``predict``, ``serve`` and ``export`` sub-commands."""
    p = sub.add_parser("predict", help="predict emotion for audio files with a trained model bundle",
                       description="Predict arousal, valence, dominance (on the scale the model was trained on) and "
                                   "category probabilities for audio files or folders. An unreadable file is skipped. "
                                   "BUNDLE may also be a folder `sermo export` wrote (predicted without torch). A "
                                   "model for real speech comes from `sermo run` on real speech (demo bundles: synthetic).")
    p.add_argument("bundle", help="a bundle folder, e.g. runs/baselines/iemocap-demo/bundles/fusion, or an exported one")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders")
    p.add_argument("--transcript", default=None,
                   help="the words spoken (models that read text otherwise transcribe with their ASR engine)")
    p.add_argument("--asr", default=None,
                   help="ASR engine for text models (default: the bundle's, else whisper-tiny.en)")
    p.add_argument("--segment", action="store_true",
                   help="long recordings: cut by voice activity into segments, one result per segment + a summary")
    p.add_argument("--max-seconds", type=number(float, positive=True), default=10.0,
                   help="longest segment with --segment (default 10)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"],
                   help="where models run (default auto: the GPU when there is one)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("serve", help="HTTP service and web page for a model bundle",
                       description="POST /predict (multipart: file, optional transcript), GET /health, the OpenAPI "
                                   "schema at /docs, and a web page at / to upload or record audio.")
    p.add_argument("bundle", help="a bundle folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=number(int, low=1, high=65535, what="a port number"), default=8000)
    p.add_argument("--max-upload-mb", type=number(float, positive=True), default=20.0,
                   help="largest accepted upload (default 20 MB)")
    p.add_argument("--max-seconds", type=number(float, positive=True), default=60.0,
                   help="longest accepted audio (default 60 s); longer audio is refused with 413")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"],
                   help="where models run (default auto: the GPU when there is one)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("export", help="export a model bundle as ONNX graphs that predict without torch",
                       description="Write BUNDLE as ONNX graphs (16 kHz samples -> the audio features the model "
                                   "reads; token ids -> the text features, with the text encoder's tokenizer.json; "
                                   "the features -> A/V/D and class probabilities) and sermo.json (sample rate, "
                                   "scale, classes, what it was trained on) to --out. Rows over frozen log-mel, "
                                   "Whisper, speech SSL and text features export; rows that read a speaker "
                                   "embedding or fine-tune an encoder are refused with the reason. Predict with "
                                   "`sermo predict OUT FILE [--transcript TEXT]` or "
                                   "sermo.serving.runtime.OnnxPredictor (onnxruntime, no torch).")
    p.add_argument("bundle", help="a bundle folder, e.g. runs/demo/baselines/bundles/audio")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="the export format (onnx)")
    p.add_argument("--out", required=True, help="the folder to write (new, empty, or an earlier export's, replaced)")
    p.set_defaults(func=_cmd_export)

"""The ``sermo`` command line. Each sub-command has ``--help``.

Errors a user can act on (a missing file, a bad corpus, an unknown name, a full disk, memory run
out) are one ``sermo: error:`` line and exit 2; a bug keeps its traceback."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sermo.cli_args import (Parser, UsageError, fold_numbers, json_quote, number, one_line_warnings, scale,
                            system_names)
from sermo.cli_serving import add_serving_commands

DEMO_DIR = Path("runs/demo")


def _cmd_synth(args: argparse.Namespace) -> int:
    from sermo.data.synth import synthesize_corpus

    t0 = time.time()
    res = synthesize_corpus(args.layout, args.out, utterances=args.utterances, seed=args.seed,
                            incongruent_share=args.incongruent, workers=args.workers, progress=not args.quiet)
    what = "already there, reused" if res.reused else f"written in {time.time() - t0:.1f} s"
    print(f"{res.layout} corpus of {res.utterances} utterances ({res.hours * 60:.1f} min of speech) "
          f"at {res.root}: {what}")
    print(f"next: sermo prepare {res.layout} {res.root} --out {res.root}/manifest.parquet")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from sermo.data.corpora import prepare
    from sermo.evaluation.report import describe_manifest

    options = {}
    if args.layout == "table":
        options["name"] = args.name
        if args.scale:
            options["scale"] = args.scale
    elif args.name or args.scale:
        raise UsageError("--name and --scale apply to the table layout only")
    manifest = prepare(args.layout, args.root, **options)
    problems = manifest.problems()
    manifest.save(args.out)
    print(describe_manifest(manifest, title=f"{args.layout}: {args.root}"))
    print(f"manifest written to {args.out}")
    if problems:
        print("problems found (the manifest keeps every row; fix the corpus or expect these rows to be skipped):",
              file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1 if args.strict else 0
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from sermo.demo import run_demo

    systems = args.systems.split(",") if args.systems else None
    report = run_demo(Path(args.out), utterances=args.utterances, seed=args.seed, systems=systems,
                      progress=not args.quiet)
    print(f"demo report: {report}")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from sermo.accelerator import lightning_accelerator, resolve_device
    from sermo.data.corpora import load_corpus, parse_corpus_arg
    from sermo.encoders import get_encoder
    from sermo.features import FeatureStore, extract

    store = FeatureStore(args.store)
    try:
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    except ValueError:
        raise UsageError(f"--layers {args.layers!r}: give hidden-state indices separated by commas, e.g. 0,6,12") \
            from None
    status, rank_zero = 0, True
    for corpus in args.corpus:
        name, path = parse_corpus_arg(corpus)
        manifest = load_corpus(path)
        for enc_name in args.encoder:
            encoder = get_encoder(enc_name, layers=layers, dtype=args.dtype, device=str(resolve_device(args.accelerator)),
                                  padding=args.speech_padding)
            if args.devices > 1 or args.num_nodes > 1:
                from sermo.features.sharded import extract_sharded

                rep = extract_sharded(manifest, encoder, store, devices=args.devices, num_nodes=args.num_nodes,
                                      accelerator=lightning_accelerator(args.accelerator), progress=not args.quiet)
                if rep is None:  # not global rank 0: rank 0 reports
                    rank_zero = False
                    continue
            else:
                rep = extract(manifest, encoder, store, verify=not args.no_verify, progress=not args.quiet)
            speed = rep.audio_seconds / rep.wall_seconds if rep.wall_seconds else 0.0
            print(f"{name} / {enc_name}: {rep.computed} computed, {rep.cached} cached, {rep.damaged} damaged "
                  f"and recomputed, {len(rep.skipped)} skipped; {rep.wall_seconds:.1f} s"
                  + (f" ({speed:.0f} s of audio per second)" if encoder.modality == "audio" and rep.computed else ""))
            for uid, why in rep.skipped[:20]:
                print(f"  skipped {uid}: {why}", file=sys.stderr)
            if len(rep.skipped) > 20:
                print(f"  ... and {len(rep.skipped) - 20} more", file=sys.stderr)
            status = status or (1 if rep.skipped and args.strict else 0)
    if rank_zero:
        print(f"feature store: {store.root}")
    return status


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from sermo.accelerator import resolve_device
    from sermo.data.corpora import load_corpus, parse_corpus_arg
    from sermo.features import FeatureStore
    from sermo.features.transcripts import transcribe_manifest

    store = FeatureStore(args.store)
    name, path = parse_corpus_arg(args.corpus)
    manifest, rep = transcribe_manifest(load_corpus(path), store, engine=args.engine, workers=args.workers,
                                        progress=not args.quiet, device=str(resolve_device(args.accelerator)))
    out = args.out or f"{name}.asr-{args.engine}.parquet"
    manifest.save(out)
    wer = f"WER {rep.wer:.1%} against the oracle transcripts" if rep.wer is not None else "no oracle transcripts"
    print(f"{name}: {rep.transcribed} transcribed, {rep.cached} cached, {len(rep.skipped)} skipped; {wer}")
    for uid, why in rep.skipped[:20]:
        print(f"  skipped {uid}: {why}", file=sys.stderr)
    print(f"manifest with asr:{args.engine} transcripts written to {out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "extract":
        from sermo.bench.extract import run_extract_bench

        report = run_extract_bench(Path(args.out), utterances=args.utterances,
                                   corpus=Path(args.corpus) if args.corpus else None)
    elif args.what == "padding":
        from sermo.bench.padding import run_padding_bench

        report = run_padding_bench(Path(args.out), utterances=args.utterances,
                                   corpus=Path(args.corpus) if args.corpus else None)
    elif args.what == "plan":
        from sermo.bench.plan import run_plan_bench

        report = run_plan_bench(Path(args.out))
    else:
        from sermo.bench.predict import run_predict_bench

        report = run_predict_bench(Path(args.out), bundle=args.bundle)
    print(report.read_text())
    print(f"written to {report}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from sermo.data.corpora import parse_corpus_arg
    from sermo.features import FeatureStore
    from sermo.training.runner import run_system

    folds = args.folds
    overrides = list(args.set or [])
    if args.label_space:
        overrides.append(f"data.label_space={json_quote(args.label_space)}")
    if args.labels:
        pairs = [p.split("=", 1) for p in args.labels.split(",")]
        if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
            raise UsageError(f"--labels {args.labels!r}: expected CORPUS=TYPE[,CORPUS=TYPE], e.g. "
                             "iemocap=continuous,msp=discrete")
        overrides.append("model.labels={" + ", ".join(f"{k.strip()}: {v.strip()}" for k, v in pairs) + "}")
    common = dict(profile=args.profile, folds=folds, overrides=overrides,
                  store=FeatureStore(args.store) if args.store else None, devices=args.devices,
                  num_nodes=args.num_nodes, accelerator=args.accelerator, progress=not args.quiet)
    corpora = [parse_corpus_arg(c) for c in args.corpus]
    if args.plan:
        from sermo.training.runner import plan_system

        print(plan_system(args.system, corpora, **common).table(), end="")
        return 0
    out = run_system(args.system, corpora, out=Path(args.out) if args.out else None, fresh=args.fresh, **common)
    from sermo.training.distributed import is_rank_zero

    if not is_rank_zero():  # another rank of a DDP run: rank 0 writes and reports the results
        return 0
    from sermo.evaluation.runfolder import RunFolder

    print(f"results: {RunFolder(out).results_path}\nreport:  {RunFolder(out).report_path}")
    skipped = [r for r in RunFolder(out).read_results()["rows"] if r.get("skipped")]
    for r in skipped:  # a row that produced nothing is not a result: say so, and exit with 1
        print(f"sermo: row {r['name']} produced nothing: {r['skipped']}", file=sys.stderr)
    return 1 if skipped else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``sermo`` sub-command."""
    parser = Parser(
        prog="sermo", description="Speech emotion recognition from audio and transcripts.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write the built-in synthetic corpus in a real corpus layout",
                       description="Synthesise an emotional speech corpus (espeak-ng voices, simulated "
                                   "annotators) in the real IEMOCAP or MSP-Podcast layout.")
    p.add_argument("--layout", choices=["iemocap", "msp-podcast"], default="iemocap")
    p.add_argument("--out", required=True, help="corpus folder to create (new or empty)")
    p.add_argument("--utterances", type=number(int, positive=True, what="a whole number"), default=None, help="number of utterances (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    p.add_argument("--incongruent", type=number(float, low=0.0, high=1.0), default=0.15,
                   help="share of utterances whose words disagree with their emotion (default 0.15)")
    p.add_argument("--workers", type=number(int, positive=True, what="a whole number"), default=None, help="synthesis processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("prepare", help="read a corpus folder into a manifest",
                       description="Read IEMOCAP, MSP-Podcast or a CSV/JSONL table into a manifest "
                                   "(parquet, JSONL or CSV by the --out suffix).")
    p.add_argument("layout", choices=["iemocap", "msp-podcast", "table"])
    p.add_argument("root", help="IEMOCAP_full_release/, the MSP-Podcast folder, or the table file")
    p.add_argument("--out", required=True, help="manifest file: .parquet, .jsonl or .csv")
    p.add_argument("--name", default=None, help="table layout: corpus name (default: the file name)")
    p.add_argument("--scale", default=None, type=scale, help="table layout: MIN,MAX of the dimensional labels")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when problems are found")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("extract", help="run frozen encoders over a corpus into the feature store",
                       description="Encode every utterance once (batched, sorted by length) into the "
                                   "content-addressed feature store; an interrupted run resumes, a damaged "
                                   "entry is recomputed, a second run computes nothing.")
    p.add_argument("--corpus", action="append", required=True, metavar="NAME=PATH",
                   help="corpus folder, table or manifest (repeatable)")
    p.add_argument("--encoder", action="append", required=True,
                   help="registry name (hubert-base, minilm, logmel, ...), Hub id or model folder (repeatable)")
    p.add_argument("--layers", default=None, help="hidden-state indices to keep, e.g. 0,6,12 (default all)")
    p.add_argument("--store", default=None, help="store folder (default $SERMO_FEATURES or ~/.cache/sermo/features)")
    p.add_argument("--dtype", default=None, choices=["float16", "float32"],
                   help="how features are stored (default: the encoder's own: float16, float32 for eGeMAPS, whose "
                        "values overflow float16)")
    p.add_argument("--no-verify", action="store_true", help="skip checksum verification of existing entries")
    p.add_argument("--speech-padding", default="bucket", choices=["bucket", "exact"],
                   help="speech models without an attention mask (HuBERT/wav2vec 2.0 Base, DistilHuBERT): zero-padded "
                        "batches of lengths rounded up to 0.25 s (bucket, the default; what sermo run reads) or one "
                        "utterance at a time (exact)")
    p.add_argument("--devices", type=number(int, positive=True, what="a whole number"), default=1,
                   help="shard over this many processes/GPUs with Lightning DDP (default 1: no sharding)")
    p.add_argument("--num-nodes", type=number(int, positive=True, what="a whole number"), default=1, help="nodes for sharded extraction (torchrun / SLURM)")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"],
                   help="where the encoder runs (default auto: the GPU when there is one; each rank its own with --devices)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any utterance is skipped")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("transcribe", help="ASR transcripts for a corpus, with WER against the oracle",
                       description="Transcribe every utterance with an ASR engine (cached in the feature "
                                   "store) and write a manifest whose transcripts have source asr:<engine>; "
                                   "the oracle transcripts stay in the column transcript_oracle.")
    p.add_argument("--corpus", required=True, metavar="NAME=PATH", help="corpus folder, table or manifest")
    p.add_argument("--engine", default="whisper-tiny.en",
                   help="ASR engine: whisper-tiny.en (default, offline: faster-whisper), pocketsphinx (offline), "
                        "whisper-tiny, whisper-base, a Whisper Hub id or folder")
    p.add_argument("--out", default=None, help="manifest to write (default NAME.asr-ENGINE.parquet)")
    p.add_argument("--store", default=None, help="feature store folder (caches transcripts)")
    p.add_argument("--workers", type=number(int, positive=True, what="a whole number"), default=None, help="processes (default: all cores)")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"],
                   help="where models run (default auto: the GPU when there is one)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_transcribe)

    p = sub.add_parser("run", help="train and evaluate a system under its paper's protocol",
                       description="Run a system's recipe over every fold of its protocol and write results.json, "
                                   "REPORT.md, plots, predictions and model bundles to the run folder. Rerunning "
                                   "the same command resumes an interrupted run.")
    p.add_argument("system", help=", ".join(system_names()))
    p.add_argument("--corpus", action="append", required=True, metavar="NAME=PATH",
                   help="corpus folder, table or manifest (repeatable)")
    p.add_argument("--profile", default="default", help="recipe profile: default (for one's own corpus: every fold, trained until validation stops improving), demo (minutes, first fold) or paper (the paper's encoders)")
    p.add_argument("--folds", default=None, type=fold_numbers, help="only these folds, e.g. 1,3")
    p.add_argument("--out", default=None, help="run folder (default runs/SYSTEM/CORPUS-PROFILE)")
    p.add_argument("--fresh", action="store_true",
                   help="empty the run folder first (a rerun otherwise resumes it, and refuses when it was made with "
                        "other settings)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe value, e.g. train.epochs=5 (repeatable)")
    p.add_argument("--store", default=None, help="feature store folder")
    p.add_argument("--label-space", default=None, metavar="SPACE",
                   help="the classes: a name (iemocap-4, msp-8, ...), auto (one per category of the training folds), "
                        "a list of the corpus's own categories (neutral,happy,sad) or a YAML file mapping each class to "
                        "its codes (happy: [hap, exc]); default: the recipe's")
    p.add_argument("--labels", default=None, metavar="CORPUS=TYPE,...",
                   help="with two corpora: the label type each contributes to training (continuous, discrete "
                        "or none), e.g. iemocap=continuous,msp=discrete (systems with a model.labels setting)")
    p.add_argument("--plan", action="store_true",
                   help="print what the run would cost (per encoder: utterances, hours, bytes stored, stored or live, "
                        "encoder passes per epoch, per device) and exit without running")
    p.add_argument("--devices", type=number(int, positive=True, what="a whole number"), default=None, help="train on this many devices with Lightning DDP")
    p.add_argument("--num-nodes", type=number(int, positive=True, what="a whole number"), default=None, help="nodes for multi-node training")
    p.add_argument("--accelerator", default=None, choices=["auto", "cpu", "gpu"],
                   help="where training, extraction and prediction run (default: the recipe's train.accelerator, auto: the GPU when there is one)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_run)

    add_serving_commands(sub)

    p = sub.add_parser("bench", help="measure speed: feature extraction, prediction, padded batches",
                       description="Benchmarks whose figures go in issue notes; nothing here asserts a time.")
    p.add_argument("what", choices=["extract", "predict", "plan", "padding"],
                   help="extract: encoders' first vs cached runs, batched vs plain loop (and the throughput later plans "
                        "count encoder hours with); predict: latency, throughput and the service's requests per "
                        "second, and the torch path against the exported ONNX one; plan: every paper profile's plan on manifests the size of IEMOCAP and MSP-Podcast "
                        "v1.10 with a 64 GB store; padding: a HuBERT-shaped model without an attention mask, padded "
                        "batches against one utterance at a time (feature agreement, a probe's UA, training steps/s)")
    p.add_argument("--utterances", type=number(int, positive=True, what="a whole number"), default=60, help="utterances of the built-in corpus (default 60)")
    p.add_argument("--corpus", default=None, help="an IEMOCAP-layout corpus to use instead of a fresh built-in one")
    p.add_argument("--out", default="runs/bench", help="folder for the report (default runs/bench)")
    p.add_argument("--bundle", default=None, help="predict: the bundle whose torch and ONNX paths are compared "
                   "(default: the benchmark's HuBERT-sized one), e.g. runs/demo/baselines/bundles/audio")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="synthesise the built-in corpus and run every system on it",
                       description="The main job on a fresh machine: write the built-in corpus if absent, "
                                   "run every registered system's demo profile, gather REPORT.md.")
    p.add_argument("--out", default=str(DEMO_DIR), help=f"demo folder (default {DEMO_DIR})")
    p.add_argument("--utterances", type=number(int, positive=True, what="a whole number"), default=1000, help="size of the built-in corpus (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--systems", default=None, help="only these systems, e.g. baselines,distilled (default all)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sermo`` console script."""
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    from sermo.errors import USER_ERRORS, environment_error

    default_show = warnings.showwarning
    warnings.showwarning = one_line_warnings(default_show)
    try:
        return int(args.func(args) or 0)
    except (UsageError, *USER_ERRORS) as exc:  # type: ignore[misc]  # a tuple of exception classes
        print(f"sermo: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the machine, not sermo: say what to do; a bug re-raises
        text = environment_error(exc)
        if text is None:
            raise
        print(f"sermo: error: {text}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = default_show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

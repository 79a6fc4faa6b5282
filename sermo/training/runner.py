"""``sermo run``: a system's recipe over every fold of a protocol, into one run folder (its
layout and schema: :mod:`sermo.evaluation.runfolder`)."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, cast

import numpy as np
import pandas as pd
import yaml

from sermo.config import RunConfig, RunError, load_recipe
from sermo.data.bundle import BundleConfig, save_bundle
from sermo.data.corpora import load_corpus
from sermo.data.io import write_text_atomic
from sermo.data.labels import Labels, LabelSpace, label_summary, labelled_ids, left_out, resolve_label_space, usable_ids
from sermo.data.manifest import DIMENSIONS, Manifest
from sermo.data.protocols import Fold, Protocol, build_protocol, protocol_for
from sermo.evaluation.metrics import METRIC_KEYS, score_predictions
from sermo.evaluation.runfolder import (CONFIG, PLAN, PROTOCOL, RECORD, FoldRow, RowSummary, RunFolder, RunResults,
                                         TestSummary, write_parquet)
from sermo.features import FeatureStore, default_store_root
from sermo.systems import get_system
from sermo.systems.api import FoldContext, RowResult
from sermo.systems.definition import SystemDef
from sermo.training.distributed import is_rank_zero
from sermo.training.fold import FoldRun
from sermo.training.folder import check_run_folder, manifest_hash, run_record
from sermo.training.plan import Plan, check_plan, plan_run
from sermo.training.rundata import RunData


@dataclass
class Prepared:
    """A run set up, before anything is extracted or trained."""

    sysdef: SystemDef
    cfg: RunConfig
    names: list[str]
    manifest: Manifest
    space: LabelSpace
    protocol: Protocol
    number: dict[str, int]
    usable: set[str]
    plan: Plan
    corpus_hash: str = ""
    transcripts: dict | None = None  # the run's own ASR transcripts: engine, WER against the oracle


def prepare_run(system: str, corpora: list[tuple[str, Path]], *, profile: str = "default",
                folds: Iterable[str | int] | None = None,
                overrides: list[str] | None = None, store: FeatureStore | None = None, devices: int | None = None,
                num_nodes: int | None = None, accelerator: str | None = None, progress: bool = True,
                transcribe: bool = True) -> Prepared:
    """The recipe, corpora, protocol, the utterances the run uses and its plan."""
    sysdef = get_system(system)
    cfg = load_recipe(system, profile, sysdef.config_cls, overrides, path=sysdef.recipe_path)
    if hasattr(cfg.model, "rows"):
        sysdef.check_rows(cfg.model.rows)
    if devices:
        cfg.train.devices = devices
    if num_nodes:
        cfg.train.num_nodes = num_nodes
    if accelerator:
        cfg.train.accelerator = accelerator
    store_root = store.root if store is not None else default_store_root()
    names = [n for n, _ in corpora]
    manifest = Manifest.concat([load_corpus(p) for _, p in corpora])
    _warn_reported(manifest)
    manifest = without_duplicates(manifest)
    corpus_hash = manifest_hash(manifest)
    if transcribe and cfg.data.transcripts != "oracle":
        from sermo.accelerator import resolve_device
        from sermo.features.transcripts import transcribe_manifest

        manifest, asr = transcribe_manifest(manifest, store or FeatureStore(), engine=cfg.data.transcripts,
                                            progress=progress, device=str(resolve_device(cfg.train.accelerator)))
        transcripts = asr.summary()
    else:
        transcripts = None
    protocol = build_protocol(protocol_for(cfg.data.protocol, manifest), manifest, seed=cfg.train.seed)
    number = {f.name: i + 1 for i, f in enumerate(protocol.folds)}  # a fold's place in the whole protocol
    if folds:
        protocol = protocol.select(folds)
    elif cfg.data.max_folds:  # the first n folds (the demo profiles: what 2 CPU cores finish in minutes)
        protocol = protocol.select(range(1, min(cfg.data.max_folds, len(protocol.folds)) + 1))
    category = dict(zip(manifest.df["id"], manifest.df["category"]))
    trained_on = [category[u] for u in sorted({u for f in protocol.folds for u in f.train})]
    space = resolve_label_space(cfg.data.label_space, trained_on)
    labels = Labels.from_manifest(manifest, space)
    if protocol.spec == "corpus-transfer":  # one fold, whose MSP-Podcast subset is sized after the label filter
        protocol = build_protocol(protocol.spec, manifest, seed=cfg.train.seed,
                                  keep=labelled_ids(manifest.df["id"], labels, sysdef.targets))
    usable = usable_ids(protocol.folds, labels, sysdef.targets)
    if not usable:
        raise RunError(f"no utterance carries a label {system}'s rows learn from ({', '.join(sysdef.targets)}): "
                       f"{label_summary(manifest, space)}")
    for fold in protocol.folds:  # a part with nothing to learn from, select on or score stops every row
        parts = {"training": fold.train, "validation": fold.valid, "test": [u for t in fold.tests.values() for u in t]}
        empty = [name for name, ids in parts.items() if not any(u in usable for u in ids)]
        if empty:
            raise RunError(f"fold {fold.name} of protocol {protocol.spec} has no {' and no '.join(empty)} utterance "
                           f"with a label {system}'s rows learn from ({fold.description}); the corpus is too small "
                           "for it: give it more utterances or speakers, or a protocol with fewer folds")
    plan = plan_run(sysdef.feature_uses(cfg), cfg, manifest, usable, protocol.folds, store_root,
                    epochs=functools.partial(sysdef.plan_epochs, cfg) if sysdef.plan_epochs else None,
                    devices=cfg.train.devices * cfg.train.num_nodes)
    return Prepared(sysdef, cfg, names, manifest, space, protocol, number, usable, plan, corpus_hash, transcripts)


def _warn_reported(manifest: Manifest, shown: int = 10) -> None:
    """The problems the corpus loaders found (each names its file and line), as warnings: a run
    goes on without what they cost, but never silently (``sermo prepare --strict`` fails on them)."""
    import warnings

    for text in manifest.reported[:shown]:
        warnings.warn(text, stacklevel=3)
    if len(manifest.reported) > shown:
        warnings.warn(f"... and {len(manifest.reported) - shown} more corpus problem(s); `sermo prepare` lists them all",
                      stacklevel=3)


def without_duplicates(manifest: Manifest) -> Manifest:
    """The manifest without rows whose id is not unique (which row is meant cannot be known; ``sermo
    prepare`` lists them as skipped), with a warning naming them."""
    import warnings

    dup = manifest.df["id"].duplicated(keep=False).to_numpy()
    if not dup.any():
        return manifest
    ids = sorted(set(manifest.df.loc[dup, "id"]))
    warnings.warn(f"{len(ids)} utterance id(s) appear more than once ({', '.join(map(str, ids[:5]))}"
                  f"{', ...' if len(ids) > 5 else ''}): their {int(dup.sum())} rows are skipped; give each utterance "
                  "its own id", stacklevel=2)
    return manifest.where(~dup)


def plan_system(system: str, corpora: list[tuple[str, Path]], **kwargs: Any) -> Plan:
    """The plan of a run (nothing extracted, transcribed or trained)."""
    return prepare_run(system, corpora, transcribe=False, **kwargs).plan


def run_system(system: str, corpora: list[tuple[str, Path]], *, profile: str = "default",
               folds: Iterable[str | int] | None = None,
               out: Path | None = None, overrides: list[str] | None = None, store: FeatureStore | None = None,
               devices: int | None = None, num_nodes: int | None = None, accelerator: str | None = None,
               progress: bool = True, fresh: bool = False) -> Path:
    """Train and evaluate ``system`` on ``corpora`` (``[(name, path)]``); return the run folder.

    A rerun into the same folder with the same settings reuses its finished folds and resumes
    an interrupted one; ``fresh`` empties the folder first.

    Raises:
        PlanError: the features it would store do not fit (before anything runs).
        RunFolderChanged: the folder was made with other settings (and ``fresh`` is not set).
    """
    from sermo.training.progress import RunProgress

    t0 = time.time()
    _quiet_lightning()
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise RunError(f"--out {out} is a file; give a folder for the run")
    store = store or FeatureStore()
    prep = prepare_run(system, corpora, profile=profile, folds=folds, overrides=overrides, store=store,
                       devices=devices, num_nodes=num_nodes, accelerator=accelerator, progress=progress)
    check_plan(prep.plan)
    sysdef, cfg, names, manifest, space, protocol, number = (prep.sysdef, prep.cfg, prep.names, prep.manifest,
                                                               prep.space, prep.protocol, prep.number)
    out = Path(out or Path("runs") / system / f"{'+'.join(names)}-{profile}")
    record = run_record(cfg, names, prep.corpus_hash)
    if is_rank_zero():
        # the other ranks of a DDP run start this same command again once rank 0 trains: the
        # folder is rank 0's to check, empty (--fresh) and describe, never theirs
        check_run_folder(out, record, fresh=fresh)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / RECORD, json.dumps(record, indent=1, default=str))
        write_text_atomic(out / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_text_atomic(out / PROTOCOL, json.dumps(
            {"protocol": protocol.spec, "description": protocol.description,
             "folds": [f.to_dict() for f in protocol.folds]}, indent=1))
        write_text_atomic(out / PLAN, prep.plan.table())
    bar = RunProgress(system, len(protocol.folds), len(getattr(cfg.model, "rows", None) or [1]), cfg.train.epochs,
                      enabled=progress and is_rank_zero())
    run = RunData(cfg, manifest, space, store, progress=progress, usable=prep.usable, plan=prep.plan, epochs=bar)
    if progress and is_rank_zero():
        print(f"sermo: {system}: {bar.describe()}; the bar below shows the time remaining", flush=True)
    folder = RunFolder(out)
    per_fold: dict[str, list[FoldRow]] = {}
    earlier = 0.0  # seconds the folds an earlier session finished took
    for k, fold in enumerate(protocol.folds):
        fdir = folder.fold(fold.name)
        finished = folder.fold_rows(fold.name)
        if finished is not None:
            per_fold[fold.name] = finished
            earlier += folder.fold_seconds(fold.name)
            bar.skip_fold()
            continue
        started = time.time()
        bar.fold(fold.name)
        ctx: FoldContext = FoldRun(run, fold, fdir, index=number[fold.name])  # the contract, checked by mypy
        rows = sysdef.run_fold(ctx)
        if rows and all(r.skipped for r in rows):  # nothing would be reported: say why instead
            raise RunError(f"fold {fold.name}: no row of {system} could run here: "
                           + "; ".join(f"{r.name}: {r.skipped}" for r in rows))
        if not is_rank_zero():  # under DDP every rank trains; rank 0 alone evaluates and writes
            continue
        records = [_evaluate_row(r, ctx, folder) for r in rows]
        if k == 0:
            provenance = trained_on(run, fold, corpora)  # once per fold: it may read the corpora's manifests
            for r in rows:
                if r.spec is not None and r.model is not None:
                    save_bundle(folder.bundle(r.name), r.model, _bundle_config(system, r, cfg, run, provenance))
        folder.write_fold_rows(fold.name, records, time.time() - started)
        per_fold[fold.name] = records
        bar.fold_done()
    bar.close()
    writer = is_rank_zero()
    _end_distributed()
    if not writer:
        return out
    results = aggregate(system, names, protocol, profile, cfg.data.label_space, per_fold)
    results["classes"] = list(space.classes)
    results["left_out"] = left_out(space, manifest.df.loc[manifest.df["id"].isin(
        {u for f in protocol.folds for u in (*f.train, *f.valid, *(x for t in f.tests.values() for x in t))}),
        "category"])
    if prep.transcripts:
        results["transcripts"] = prep.transcripts
    # features the run read that its system's declared rows and analyses did not (the plan missed them)
    results["unplanned"] = sorted(run.unplanned)
    # a resumed run's time: this session's, plus what the folds an earlier session finished took
    results["seconds_this_session"] = round(time.time() - t0, 1)
    results["seconds_earlier"] = round(earlier, 1)
    results["seconds"] = round(results["seconds_this_session"] + earlier, 1)
    folder.write_results(results)
    from sermo.evaluation.report import run_report
    from sermo.evaluation.run_plots import plot_run

    plots = plot_run(out, results, space.classes)
    extra = sysdef.finish(out, results) if sysdef.finish else ""
    write_text_atomic(folder.report_path, run_report(results, protocol, sysdef, corpora, plots, extra, run_folder=out,
                                                    cfg=cfg))
    return out


def _end_distributed() -> None:
    """Take the DDP process group down on every rank (an undestroyed gloo group aborts at exit)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _quiet_lightning() -> None:
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def _evaluate_row(r: RowResult, ctx: FoldContext, folder: RunFolder) -> FoldRow:
    if r.skipped:
        return {"name": r.name, "modalities": list(r.modalities), "trainable_params": 0, "metrics": {},
                "info": {}, "skipped": r.skipped}
    metrics: dict[str, dict] = {}
    for test, pred in r.predictions.items():
        ids = pred.ids
        truth_dims, truth_cls = ctx.truth(ids)
        classes = list(ctx.space.classes)
        # class indices (what the metrics read) and the class names beside them
        table: dict[str, Any] = {"id": ids, "category_true": truth_cls,
                                 "class_true": [classes[c] if c >= 0 else None for c in truth_cls]}
        if pred.dims is not None:
            for j, d in enumerate(DIMENSIONS):
                table[f"{d}_true"], table[f"{d}_pred"] = truth_dims[:, j], pred.dims[:, j]
        if pred.probs is not None:
            table["category_pred"] = pred.probs.argmax(1)
            table["class_pred"] = [classes[c] for c in table["category_pred"]]
            for c, name in enumerate(ctx.space.classes):
                table[f"p_{name}"] = pred.probs[:, c]
        metrics[test] = score_predictions(truth_dims, truth_cls, pred.dims, pred.probs, ctx.num_classes)
        # which utterances it was scored on: rows of one table must be comparable (a row drops
        # the utterances that lack its input, e.g. a transcript)
        metrics[test].update(utterances=len(ids), ids_digest=_digest(sorted(map(str, ids))))
        write_parquet(folder.predictions(r.name, ctx.name, test), pd.DataFrame(table))
    return {"name": r.name, "modalities": list(r.modalities), "trainable_params": r.trainable_params,
            "metrics": metrics, "info": r.info}


def _digest(parts: list[str]) -> str:
    """A short fingerprint of a list of strings (which test utterances a row was scored on)."""
    import hashlib

    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:12]


def _sample_std(values: list[float]) -> float | None:
    """The sample standard deviation over folds (ddof 1); ``None`` for a single fold, where
    there is no spread to show."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def aggregate(system: str, corpora: list[str], protocol: Protocol, profile: str, label_space: str,
              per_fold: dict[str, list[FoldRow]]) -> RunResults:
    """results.json: per row, per-fold metrics of the primary test set, mean and std; other test
    sets under ``tests``."""
    order: list[str] = []
    by_row: dict[str, list[tuple[str, FoldRow]]] = {}
    for fold, records in per_fold.items():
        for rec in records:
            if rec["name"] not in by_row:
                order.append(rec["name"])
            by_row.setdefault(rec["name"], []).append((fold, rec))
    rows: list[RowSummary] = []
    for name in order:
        recs = by_row[name]
        first = recs[0][1]
        tests = list(first["metrics"])
        entry: RowSummary = {"name": name, "modalities": first["modalities"],
                             "trainable_params": first["trainable_params"]}
        if first.get("skipped"):
            entry.update(RowSummary(skipped=first["skipped"], folds=[], mean={}, std={}, test_set=None))
            rows.append(entry)
            continue
        for t_i, test in enumerate(tests):
            folds = [{"fold": f, **{k: v for k, v in r["metrics"].get(test, {}).items() if k in METRIC_KEYS}}
                     for f, r in recs]
            keys = [k for k in METRIC_KEYS if any(k in f for f in folds)]
            summary: TestSummary = {"folds": folds,
                                    "mean": {k: float(np.mean([f[k] for f in folds if k in f])) for k in keys},
                                    "std": {k: _sample_std([f[k] for f in folds if k in f]) for k in keys}}
            summary["utterances"] = int(sum(r["metrics"].get(test, {}).get("utterances", 0) for _, r in recs))
            summary["ids_digest"] = _digest([r["metrics"].get(test, {}).get("ids_digest", "") for _, r in recs])
            conf = [r["metrics"].get(test, {}).get("confusion") for _, r in recs]
            if all(c is not None for c in conf) and conf:
                summary["confusion"] = np.sum(np.array(conf), axis=0).tolist()
            if t_i == 0:
                entry.update(cast(RowSummary, {**summary, "test_set": test}))
            else:
                entry.setdefault("tests", {})[test] = summary
        infos = [r["info"] for _, r in recs if r.get("info")]
        if infos:
            entry["info"] = infos
        rows.append(entry)
    return {"system": system, "corpus": "+".join(corpora), "protocol": protocol.spec, "profile": profile,
            "label_space": label_space, "rows": rows}


def trained_on(run: RunData, fold: Fold, corpora: list[tuple[str, Path]]) -> dict:
    """What a fold's models learned from, for their bundles (and the caveat a model trained on the
    built-in synthetic corpus carries wherever it predicts)."""
    from sermo.evaluation.report import is_builtin_corpus

    df = run.manifest.df
    train = df[df["id"].isin([u for u in fold.train if u in run.usable])]
    return {"corpora": [name for name, _ in corpora], "builtin": any(is_builtin_corpus(p) for _, p in corpora),
            "label_space": run.space.name, "utterances": int(len(train)),
            "speakers": int(train["speaker"].nunique())}


def _bundle_config(system: str, r: RowResult, cfg: RunConfig, run: RunData,
                   provenance: dict | None = None) -> BundleConfig:
    assert r.spec is not None, "only servable rows have bundles"
    import dataclasses

    df = run.manifest.df
    per_corpus = {c: [float(g["scale_min"].min()), float(g["scale_max"].max())]
                  for c, g in df[["corpus", "scale_min", "scale_max"]].dropna().groupby("corpus", sort=False)}
    # dimensions are learned on [0, 1] of each corpus's own scale; a model trained on several
    # corpora answers on the first one's (all of them are listed)
    return BundleConfig(system=system, row=r.name, modalities=list(r.modalities), model=dataclasses.asdict(cfg.model),
                        spec=r.spec, label_space=run.space.to_dict(),
                        label_scale=next(iter(per_corpus.values()), None), label_scales=per_corpus,
                        transcripts=cfg.data.transcripts, trained_on=dict(provenance or {}))

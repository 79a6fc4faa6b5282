"""What a run folder is made with (``made_with.json``) and the check a rerun passes: the same
settings and corpus resume it; other settings are refused naming what changed (or, with
``--fresh``, the folder is emptied first, if sermo made it)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from sermo.config import RunError
from sermo.data.manifest import Manifest
from sermo.evaluation.runfolder import CONFIG, ENTRIES, RECORD, RunFolder

# where a run trains, not what it computes: these may change between an interrupted run and its resumption
WHERE_KEYS = ("train.devices", "train.num_nodes", "train.accelerator", "train.strategy")


class RunFolderChanged(RunError):
    """A rerun into a run folder made with other settings (the message names what changed)."""


def manifest_hash(manifest: Manifest) -> str:
    """A hash of what a run learns from in a manifest: ids, speakers, sessions, partitions, labels,
    transcripts and segment times (not where the files lie, so a moved corpus is the same)."""
    import hashlib

    cols = [c for c in ("id", "speaker", "session", "dialog", "partition", "category", "arousal", "valence",
                        "dominance", "transcript", "start", "end") if c in manifest.df]
    df = manifest.df[cols].sort_values("id").reset_index(drop=True)
    return hashlib.sha256(pd.util.hash_pandas_object(df.astype(str), index=False).values.tobytes()).hexdigest()[:16]


def run_record(cfg, corpora: list[str], corpus_hash: str) -> dict:
    """What a run folder is made with (``made_with.json``)."""
    import sermo

    flat = _flatten({k: v for k, v in cfg.to_dict().items() if k != "description"})
    record = {"settings": {k: v for k, v in flat.items() if k not in WHERE_KEYS},
              "corpora": corpora, "corpus_hash": corpus_hash, "sermo": sermo.__version__}
    return json.loads(json.dumps(record, default=str))  # as it reads back from the file


def check_run_folder(out: Path, record: dict, *, fresh: bool = False) -> None:
    """Make ``out`` ready for a run made with ``record``: new, the same settings (finished parts are
    reused), or emptied when ``fresh``.

    Raises:
        RunError: ``out`` is a file, or a folder that is not a run folder and ``fresh`` is asked.
        RunFolderChanged: ``out`` was made with other settings and ``fresh`` is not asked.
    """
    import shutil

    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file; give a folder for the run")
    if not out.is_dir() or not any(out.iterdir()):
        return
    made = out / RECORD
    old = None
    if made.is_file():
        try:
            old = json.loads(made.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(f"{made}: damaged ({exc}); pass --fresh to start the run over") from None
    elif (out / CONFIG).is_file():  # made before made_with.json existed: its config is what we know
        try:
            old_cfg = yaml.safe_load((out / CONFIG).read_text()) or {}
        except yaml.YAMLError:
            old_cfg = None
        if old_cfg is not None and _is_run_config(old_cfg):
            flat = _flatten({k: v for k, v in old_cfg.items() if k != "description"})
            old = {"settings": {k: v for k, v in flat.items() if k not in WHERE_KEYS}}
    foreign = foreign_entries(out)
    if old is None:  # a folder sermo did not make: never write into it, never empty it
        shown = ", ".join(p.name for p in foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise RunError(f"--out {out} holds files sermo did not write ({shown}); give a new or empty folder for the run")
    if fresh:
        if foreign:  # only what sermo wrote goes; a user's files beside it stay, and so does the run
            shown = ", ".join(p.name for p in foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                                               else "")
            raise RunError(f"--fresh would delete {shown} in {out}, which sermo did not write; move them out of the "
                           "run folder, or choose another --out")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return
    if old is None:
        return
    changes = _changes(old, record)
    if changes:
        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        raise RunFolderChanged(f"{out} was made with other settings ({shown}): its finished folds would mix with "
                               "this run's. Rerun with the same settings to resume it, choose another --out, or "
                               "pass --fresh to start it over")


def _is_run_config(cfg) -> bool:
    """Whether a config.yaml is one sermo wrote (its data, train and model sections)."""
    return isinstance(cfg, dict) and all(isinstance(cfg.get(k), dict) for k in ("data", "train", "model"))


def foreign_entries(out: Path) -> list[Path]:
    """What a run folder holds that sermo did not write: anything but its own files and one
    folder per fold of its protocol (atomic writes' temporary files count as its own)."""
    own = set(ENTRIES) | set(RunFolder(out).protocol_folds())
    return sorted(p for p in out.iterdir() if p.name not in own and not _temporary(p.name))


def _temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _changes(old: dict, new: dict) -> list[str]:
    out = []
    a, b = old.get("settings", {}), new["settings"]
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            out.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    if "corpus_hash" in old and old["corpus_hash"] != new["corpus_hash"]:
        out.append(f"the corpus ({'+'.join(old.get('corpora', []))}: its utterances, labels or transcripts)")
    if "sermo" in old and old["sermo"] != new["sermo"]:
        out.append(f"sermo {old['sermo']} -> {new['sermo']}")
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k in ("data", "train", "model") and not prefix:
            out.update(_flatten(v, f"{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out

"""Resuming an interrupted training stage without losing or trusting anything.

A stage folder holds Lightning's ``last.ckpt`` (written every epoch) and ``metrics.csv``.
Before a rerun resumes from ``last.ckpt`` it is read the safe way (tensors and plain data
only); a damaged one, or one that holds code, is set aside as ``last.ckpt.damaged`` with a
warning and the stage starts over. Lightning's CSV logger deletes ``metrics.csv`` when it
starts, so the epochs before the interruption are set aside first and merged back after.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from sermo.data.io import atomic_path
from sermo.training.task import load_checkpoint

EARLIER = "metrics.before-resume.csv"


def resume_from(last: Path) -> tuple[Path | None, int | None]:
    """``(last.ckpt, its epoch)`` when a stage can resume from it, ``(None, None)`` otherwise."""
    if not last.is_file():
        return None, None
    try:
        state = load_checkpoint(last)
        if not isinstance(state, dict) or "state_dict" not in state:
            raise ValueError(f"{last}: holds no state_dict")
    except ValueError as exc:
        aside = last.with_name(last.name + ".damaged")
        last.replace(aside)
        warnings.warn(f"{exc}; kept as {aside.name}, the stage starts over", stacklevel=2)
        return None, None
    return last, int(state.get("epoch", 0))


def set_metrics_aside(stage_dir: Path) -> None:
    """Move ``metrics.csv`` (the epochs before an interruption) where the logger will not delete it,
    joining it to what an earlier interruption set aside."""
    current, earlier = stage_dir / "metrics.csv", stage_dir / EARLIER
    if not current.is_file():
        return
    if earlier.is_file():
        _write(earlier, _join(_read(earlier), _read(current)))
        current.unlink()
    else:
        current.replace(earlier)


def merge_metrics(stage_dir: Path) -> None:
    """Put the set-aside epochs back in front of the resumed run's (its own take precedence from the
    epoch it resumed at)."""
    current, earlier = stage_dir / "metrics.csv", stage_dir / EARLIER
    if not earlier.is_file():
        return
    merged = _join(_read(earlier), _read(current)) if current.is_file() else _read(earlier)
    _write(current, merged)
    earlier.unlink()


def _join(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    if after.empty or "epoch" not in after or "epoch" not in before:
        return pd.concat([before, after], ignore_index=True)
    first = after["epoch"].min()
    return pd.concat([before[before["epoch"] < first], after], ignore_index=True)


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return pd.DataFrame()


def _write(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def atomic_checkpoint_io():
    """Lightning's checkpoint writer, writing each checkpoint beside its target and renaming it
    into place: an interruption mid-write leaves the previous ``last.ckpt`` whole."""
    import torch
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            if storage_options is not None:
                raise TypeError("storage_options are not supported here")
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)

    return AtomicCheckpointIO()

"""``python tests/paper/ddp_probe.py ARGS``: ``sermo ARGS`` with probes that record, per DDP rank,
what the two-process test compares (Lightning starts the other rank by running this same
script again, so every rank carries the probes).

Each rank appends JSON lines to ``$SERMO_DDP_PROBE/rank<r>.jsonl``:

- ``fit``: a stage's name, a hash of the weights the stage returned and of its ``best.ckpt``;
- ``teacher``: a hash of the teacher's embeddings and predictions (teacher_student);
- ``mask``: a hash of the conditional student's residual mask;
- ``write``: an analysis file written (its name);
- ``asr``: utterances an ASR engine transcribed (not read from the cache).

``$SERMO_DDP_FIRST_BEST=1`` adds ``100 x epoch`` to the validation scores, so the first epoch is
always the best and the last epoch's weights always differ from the best's.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def _record(kind: str, **data) -> None:
    folder = Path(os.environ["SERMO_DDP_PROBE"])
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"rank{_rank()}.jsonl", "a") as f:
        f.write(json.dumps({"kind": kind, **data}) + "\n")


def _sha_state(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _sha_arrays(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def install() -> None:
    from sermo.encoders import asr
    from sermo.training import fold, task
    from sermo.training.task import load_checkpoint

    fit = fold.FoldRun.fit

    def probed_fit(self, model, stage, train, valid, train_cfg=None):
        out = fit(self, model, stage, train, valid, train_cfg)
        best = load_checkpoint(self.folder / stage / "best.ckpt")["state_dict"]
        best = {k[len("model."):]: v for k, v in best.items() if k.startswith("model.")}
        _record("fit", stage=f"{self.name}/{stage}", weights=_sha_state(out.state_dict()), best=_sha_state(best))
        return out

    fold.FoldRun.fit = probed_fit

    if os.environ.get("SERMO_DDP_FIRST_BEST") == "1":
        log = task.SystemTask.log

        def later_is_worse(self, name, value, *args, **kwargs):
            if name in ("val_loss", "val_select"):
                value = value + 100.0 * self.current_epoch
            return log(self, name, value, *args, **kwargs)

        task.SystemTask.log = later_is_worse

    from sermo.systems.teacher_student import run as ts  # the fold's code looks both up in its own module

    embed = ts._embed

    def probed_embed(ctx, model, dataset):
        ids, emb, dims = embed(ctx, model, dataset)
        _record("teacher", ids=len(ids), hash=_sha_arrays(emb, dims))
        return ids, emb, dims

    ts._embed = probed_embed
    mask = ts.residual_mask

    def probed_mask(pred, labels, sigmas=2.0):
        keep, info = mask(pred, labels, sigmas)
        _record("mask", kept=int(keep.sum()), hash=_sha_arrays(keep))
        return keep, info

    ts.residual_mask = probed_mask

    from sermo.data import io

    def probe_writes(module) -> None:
        write = getattr(module, "write_json_atomic", None)
        if write is None:
            return

        def probed_write(path, data, *args, **kwargs):
            if Path(path).parent.name == "analysis":
                _record("write", file=Path(path).name)
            return write(path, data, *args, **kwargs)

        module.write_json_atomic = probed_write

    import sermo.systems.distilled.run as distilled_run

    for module in (fold, distilled_run, io):
        probe_writes(module)

    for cls, method in ((asr.WhisperASR, "transcribe_batch"), (asr.PocketsphinxASR, "transcribe")):
        original = getattr(cls, method)

        def probed(self, batch, _original=original, _method=method):
            _record("asr", utterances=len(batch) if _method == "transcribe_batch" else 1)
            return _original(self, batch)

        setattr(cls, method, probed)


if __name__ == "__main__":
    install()
    from sermo.cli import main

    sys.exit(main(sys.argv[1:]))

"""The Lightning task that trains any system, and plain prediction over a dataset.

A system is an ``nn.Module`` with ``forward(batch) -> Output`` and
``losses(output, batch) -> {"loss": total, <name>: part, ...}``; it may define
``param_groups() -> [(params, lr_scale), ...]`` to give fine-tuned encoder layers their own
learning rate. The task adds the optimiser (Adam), the schedule (plateau or warm-up),
logging of every named loss, and RNG state in checkpoints so a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable

import lightning as L
import numpy as np
import torch

from sermo.config import RunError, TrainConfig
from sermo.data.batch import Batch
from sermo.systems.api import lr_groups


class SystemTask(L.LightningModule):
    """Trains ``model`` with ``cfg``; validation loss is ``val_loss``."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, *, stage: str = "", labelled=(True, True),
                 missing: str = "", slower: Iterable[tuple[str, float]] = ()):
        super().__init__()
        # a system's model: an nn.Module with forward(batch) -> Output and losses(output, batch)
        self.model: Any = model
        self.cfg, self.stage = cfg, stage
        self.slower = sorted(slower)  # (submodule, lr scale): a row's declared slower parts
        self._val: list[tuple] = []
        self.schedule: WarmupSchedule | None = None
        # whether the training split has dimensions / classes at all, and what to say when a
        # model learns only what it has none of
        self.labelled, self.missing = labelled, missing
        self._checked = False

    def forward(self, batch: Batch):
        return self.model(batch)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device)

    def _step(self, batch: Batch, stage: str, out=None) -> torch.Tensor:
        losses = self.model.losses(out if out is not None else self.model(batch), batch)
        for name, value in losses.items():
            key = f"{stage}_{name}" if name != "loss" else f"{stage}_loss"
            self.log(key, value.detach(), on_step=False, on_epoch=True, batch_size=len(batch),
                     prog_bar=name == "loss", sync_dist=self.trainer.world_size > 1)
        return losses["loss"]

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self.model(batch)
        if not self._checked:
            self._check_task(out)
        loss = self._step(batch, "train", out)
        if not torch.isfinite(loss):
            from sermo.config import RunError

            raise RunError(f"stage {self.stage or '?'}: the training loss became {float(loss)} on the batch of "
                           f"{', '.join(batch.ids[:4])}{' ...' if len(batch) > 4 else ''}: a label or feature is not "
                           "finite, or the learning rate is too high for this model")
        return loss

    def _check_task(self, out) -> None:
        """Stop a model that predicts only what its training split has no labels of (it would
        train at a loss of zero and report nothing)."""
        from sermo.config import RunError

        self._checked = True
        has_dims, has_classes = self.labelled
        learns = (out.dims is not None and has_dims) or (out.logits is not None and has_classes)
        if not learns:
            wants = " and ".join(w for w, o in (("dimensions", out.dims), ("classes", out.logits)) if o is not None)
            raise RunError(f"stage {self.stage or '?'}: the model predicts {wants or 'nothing'}, but its training "
                           f"split has none of them: {self.missing}")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        out = self.model(batch)
        self._step(batch, "val", out)
        self._val.append(tuple(None if t is None else t.detach().float().cpu() for t in
                               (out.dims, batch.dims, out.logits, batch.category.float())))

    def on_validation_epoch_end(self) -> None:
        """``val_select``: (1 - CCC mean) + (1 - UA) over the whole validation set (each where the
        system predicts it) -- steadier for picking the best epoch than a mean of batch losses."""
        from sermo.evaluation.metrics import ccc, unweighted_accuracy

        parts, score = self._val, 0.0
        self._val = []
        if not parts:
            return
        if parts[0][0] is not None:
            pred = torch.cat([p[0] for p in parts]).numpy()
            true = torch.cat([p[1] for p in parts]).numpy()
            if pred.shape[1] != true.shape[1]:  # a model that learns some dimensions names them
                true = true[:, list(getattr(self.model, "targets", range(pred.shape[1])))]
            cccs = [ccc(true[:, j], pred[:, j]) for j in range(true.shape[1]) if np.isfinite(true[:, j]).sum() > 1]
            score += 1.0 - float(np.mean(cccs)) if cccs else 0.0
        if parts[0][2] is not None:
            guess = torch.cat([p[2] for p in parts]).argmax(1).numpy()
            truth = torch.cat([p[3] for p in parts]).long().numpy()
            if (truth >= 0).any():
                score += 1.0 - unweighted_accuracy(truth, guess)
        self.log("val_select", score, sync_dist=self.trainer.world_size > 1)

    def configure_optimizers(self):
        cfg = self.cfg
        if self.slower:
            groups = [{"params": [p for p in ps if p.requires_grad], "lr": cfg.lr * scale}
                      for ps, scale in lr_groups(self.model, [(getattr(self.model, n), s) for n, s in self.slower])]
            groups = [g for g in groups if g["params"]]
        elif hasattr(self.model, "param_groups"):
            groups = [{"params": [p for p in ps if p.requires_grad], "lr": cfg.lr * scale}
                      for ps, scale in self.model.param_groups()]
            groups = [g for g in groups if g["params"]]
        else:
            groups = [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr": cfg.lr}]
        opt = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                               patience=cfg.plateau_patience)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}
        if cfg.scheduler in ("warmup", "noam"):
            self.schedule = warmup_schedule(cfg, int(self.trainer.estimated_stepping_batches))
            sched = torch.optim.lr_scheduler.LambdaLR(opt, self.schedule.factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if cfg.scheduler == "none":
            return opt
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}; known: plateau, warmup, noam, none")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # plain tensors and numbers only: Lightning reloads checkpoints with weights_only=True
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, state, gauss_next = random.getstate()
        checkpoint["sermo_rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": int(version), "state": torch.tensor(state, dtype=torch.int64),
                       "gauss_next": gauss_next},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("sermo_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            n = rng["numpy"]
            np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                                 n["gauss"]))
            p = rng["python"]
            random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))


@dataclass
class WarmupSchedule:
    """A warm-up (``warmup``: then constant; ``noam``: then inverse square root decay) fitted to
    the run's real number of steps.

    Attributes:
        kind: ``warmup`` or ``noam``.
        requested: the recipe's warm-up steps.
        steps: the warm-up steps used (cut to ``warmup_max_share`` of the run when longer).
        total: optimizer steps of the whole run (epochs x batches).
        peak: the largest learning-rate factor the run reaches (1.0: the recipe's ``lr``).
    """

    kind: str
    requested: int
    steps: int
    total: int

    def factor(self, step: int) -> float:
        """The learning rate's factor at optimizer step ``step`` (0-based)."""
        s = step + 1
        if s <= self.steps:
            return s / self.steps
        return (self.steps / s) ** 0.5 if self.kind == "noam" else 1.0

    @property
    def peak(self) -> float:
        return max(self.factor(min(self.steps, self.total) - 1), 0.0) if self.total else 0.0

    def to_dict(self) -> dict:
        return {"scheduler": self.kind, "warmup_requested": self.requested, "warmup_steps": self.steps,
                "total_steps": self.total, "peak_factor": round(self.peak, 4)}


def warmup_schedule(cfg: TrainConfig, total: int) -> WarmupSchedule:
    """The warm-up of ``cfg`` for a run of ``total`` optimizer steps."""
    steps = max(int(cfg.warmup_steps), 1)
    if cfg.warmup_max_share is not None and total > 0:
        steps = max(1, min(steps, int(cfg.warmup_max_share * total)))
    return WarmupSchedule(cfg.scheduler, int(cfg.warmup_steps), steps, int(total))


@dataclass
class RawPredictions:
    """A model's outputs over a loader: ``dims`` ``(n, 3)`` in [0, 1] and ``logits`` ``(n, C)`` (or ``None``)."""

    ids: list[str]
    dims: np.ndarray | None
    logits: np.ndarray | None


@torch.no_grad()
def predict(model: torch.nn.Module, data, *, device=None, precision: str = "32") -> RawPredictions:
    """Run ``model`` over a DataLoader in eval mode, on ``device`` (default: where it is) at
    ``precision``; the model is left where it was."""
    from sermo.accelerator import autocast

    was, home = model.training, next(model.parameters(), torch.empty(0)).device
    device = torch.device(device) if device is not None else home
    model.to(device).eval()
    ids, dims, logits = [], [], []
    try:
        for batch in data:
            with autocast(device, precision):
                out = model(batch.to(device))
            ids += batch.ids
            if out.dims is not None:
                dims.append(out.dims.float().cpu().numpy())
            if out.logits is not None:
                logits.append(out.logits.float().cpu().numpy())
    finally:
        model.train(was).to(home)
    return RawPredictions(ids, np.concatenate(dims) if dims else None, np.concatenate(logits) if logits else None)


class CheckpointError(RunError):
    """A checkpoint that cannot be read safely: damaged, or holding more than tensors and data."""


def load_checkpoint(path) -> dict:
    """A training checkpoint's contents, read without executing anything it holds: only
    tensors, numbers, strings and containers of them load (``torch.load(weights_only=True)``).
    Every checkpoint sermo reads goes through here.

    Raises:
        CheckpointError: the file is not such a checkpoint (damaged, or holding code); the message
            names it and says how to recover.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zips, unsafe globals
        raise CheckpointError(f"{path}: not a readable sermo checkpoint ({str(exc).splitlines()[0][:200]}); delete it "
                         "to train that stage again") from None


def count_trainable(model: torch.nn.Module) -> int:
    """Trainable parameters of a model (the #Params column of the reports)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))

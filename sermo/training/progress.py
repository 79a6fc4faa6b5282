"""The run-level progress bar: every training epoch of every fold, stage and row on one bar,
with the time remaining, beside Lightning's per-epoch bar.

Before a run trains, its epochs are estimated as folds x configured rows x ``train.epochs``;
a system that trains more stages per row (fine-tuning then a head, analyses) grows the total
as they start, and early stopping ends a stage sooner, so the remaining time is an estimate
that firms up as the run goes.
"""

from __future__ import annotations


class RunProgress:
    """Counts training epochs across a run; ``bar`` is ``None`` when progress is off.

    The total starts as folds x rows x epochs; after each fold it becomes what the finished
    folds trained on average times the folds left (rows that train no epochs, such as a linear
    probe, and early stopping make the first guess high)."""

    def __init__(self, system: str, folds: int, rows: int, epochs: int, *, enabled: bool = True):
        from tqdm import tqdm

        self.per_fold = max(1, rows) * epochs
        self.total = folds * self.per_fold
        self.folds_left = folds
        self.trained: list[int] = []  # epochs each finished fold trained
        self.fold_start = 0
        self.bar = tqdm(total=self.total, desc=f"{system}: run", unit="epoch", disable=not enabled, position=0,
                        dynamic_ncols=True) if enabled else None

    def describe(self) -> str:
        return f"about {self.total} training epochs ({self.total // self.per_fold} fold(s) x {self.per_fold})"

    def fold(self, name: str) -> None:
        if self.bar is not None:
            self.fold_start = self.bar.n
            self.bar.set_postfix_str(name)

    def fold_done(self) -> None:
        """A fold finished: the remaining folds are expected to train as many epochs as the
        finished ones did on average."""
        self.folds_left = max(0, self.folds_left - 1)
        if self.bar is not None:
            self.trained.append(self.bar.n - self.fold_start)
            expected = sum(self.trained) / len(self.trained)
            self.bar.total = self.bar.n + round(self.folds_left * expected)
            self.bar.refresh()

    def skip_fold(self) -> None:
        """A fold finished before (a resumed run): its epochs leave the total."""
        self.folds_left = max(0, self.folds_left - 1)
        if self.bar is not None:
            expected = sum(self.trained) / len(self.trained) if self.trained else self.per_fold
            self.bar.total = max(self.bar.n, self.bar.total - round(expected))
            self.bar.refresh()

    def tick(self) -> None:
        if self.bar is not None:
            if self.bar.n + 1 > self.bar.total:  # more stages than estimated
                self.bar.total = self.bar.n + 1
            self.bar.update(1)

    def callback(self):
        """A Lightning callback that ticks at the end of every training epoch (rank 0)."""
        from lightning.pytorch.callbacks import Callback

        progress = self

        class EpochTick(Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                if trainer.is_global_zero:
                    progress.tick()

        return EpochTick()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

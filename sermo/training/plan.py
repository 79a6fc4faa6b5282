"""What a run will cost before it starts: per encoder, the utterances and hours it reads, the
bytes its features take in the store, the encoder passes per epoch, and whether its features
are stored or computed live on the accelerator (``sermo run ... --plan``).

Sizes come from the manifest (durations, transcripts) and the encoders' shapes (the registry's,
else a local config), so a plan needs no weights and no audio. Features are stored in float16
(float32 for eGeMAPS): ``frames x layers x dim x 2`` (or 4) bytes per utterance, plus its small
metadata file.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sermo.config import ConfigError
from sermo.data.manifest import Manifest
from sermo.evaluation.report import markdown_table

ENTRY_OVERHEAD = 600  # bytes per stored entry beside the array: .npy header, metadata JSON
WORDS_PER_SECOND = 2.5  # to estimate tokens of utterances without a transcript
TOKENS_PER_WORD = 1.3
MODES = ("auto", "stored", "live")
HEADROOM = 0.9  # share of the store's free space a run may fill


class PlanError(ConfigError):
    """A run that cannot go as configured (its stored features would not fit); the message holds
    the plan and the option that fits (a user error: one message, exit 2)."""


@dataclass
class PlanEntry:
    """One encoder's features in a run (equal encoder and layers merged)."""

    encoder: str
    layers: tuple[int, ...] | None
    shape: tuple[int, int]  # (layers kept, dim)
    rate: float | None  # frames per second; None: tokens; 0: one frame per utterance
    utterances: int = 0
    hours: float = 0.0
    bytes: int = 0
    readers: int = 0
    analysis: bool = False
    what: list[str] = field(default_factory=list)
    mode: str = "stored"
    passes_per_epoch: int = 0  # encoder forward passes per epoch when live
    seconds_per_epoch: float = 0.0  # seconds of audio those passes read
    epochs: int = 1  # epochs of the models that read it
    flop_per_second_of_audio: float | None = None  # one forward pass (None: a text or CPU-only encoder)

    def device_hours(self, flop_per_second: float, folds: int) -> tuple[float | None, float | None]:
        """``(stored, live)``: device hours to extract its features once, and to compute them in
        every epoch of every fold instead (``None`` where no accelerator time is counted)."""
        from sermo.training.cost import hours

        if self.flop_per_second_of_audio is None:
            return None, None
        once = hours(self.hours * 3600 * self.flop_per_second_of_audio, flop_per_second)
        live = hours(self.seconds_per_epoch * self.epochs * folds * self.flop_per_second_of_audio, flop_per_second)
        return once, live

    @property
    def key(self) -> tuple:
        return self.encoder, self.layers


@dataclass
class Plan:
    """The run's features and where they go; :meth:`table` for people, :meth:`mode` for the engine."""

    entries: list[PlanEntry]
    store: Path
    free_bytes: int | None
    devices: int = 1
    epochs: int = 1
    folds: int = 1
    requested: str = "auto"
    flop_per_second: float = 25e12  # the device's encoder throughput (sermo.training.cost)
    throughput_source: str = "documented"
    device_kind: str = "GPU"

    @property
    def stored_bytes(self) -> int:
        return sum(e.bytes for e in self.entries if e.mode == "stored")

    def fits(self) -> bool:
        """Whether the stored features fit in the store's free space (with headroom)."""
        return self.free_bytes is None or self.stored_bytes <= HEADROOM * self.free_bytes

    def entry(self, encoder: str, layers) -> PlanEntry | None:
        """The plan's entry for an encoder's features (these hidden states), if it sized them."""
        key = (encoder, tuple(int(i) for i in layers) if layers is not None else None)
        return next((e for e in self.entries if e.key == key), None)

    def mode(self, encoder: str, layers) -> str:
        """``stored`` or ``live`` for an encoder's features (``stored`` for any the plan lacks)."""
        entry = self.entry(encoder, layers)
        return entry.mode if entry is not None else "stored"

    def device_hours(self) -> tuple[float, float]:
        """``(stored, live)`` device hours of the run as planned: one extraction pass over what is
        stored, and every epoch's passes over what is live."""
        stored = live = 0.0
        for e in self.entries:
            once, every = e.device_hours(self.flop_per_second, self.folds)
            if once is not None and every is not None:
                stored += once if e.mode == "stored" else 0.0
                live += every if e.mode == "live" else 0.0
        return stored, live

    def table(self) -> str:
        """The plan as markdown: one line per encoder, then the totals, the device time and the store."""
        rows = []
        dev = self.device_kind
        hours = {id(e): e.device_hours(self.flop_per_second, self.folds) for e in self.entries}
        for e in self.entries:
            live = e.mode == "live"
            once, every = hours[id(e)]
            rows.append({
                "encoder": e.encoder + (f" {list(e.layers)}" if e.layers is not None else ""),
                "for": ", ".join(dict.fromkeys(e.what)), "layers x dim": f"{e.shape[0]} x {e.shape[1]}",
                "utterances": f"{e.utterances:,}", "hours": f"{e.hours:.1f}",
                "bytes to store": "0 (live)" if live else human(e.bytes), "mode": e.mode,
                "passes per epoch": f"{e.passes_per_epoch:,}" if live else "0 (1 extraction pass)",
                "per device": f"{math.ceil(e.passes_per_epoch / self.devices):,}" if live else
                f"{math.ceil(e.utterances / self.devices):,} once",
                f"{dev} h stored (once)": "-" if once is None else f"{once:,.2f}",
                f"{dev} h live (run)": "-" if every is None else f"{every:,.2f}",
                f"{dev} h live (fold)": "-" if every is None else f"{every / max(self.folds, 1):,.2f}"})
        free = "unknown" if self.free_bytes is None else human(self.free_bytes)
        stored_h, live_h = self.device_hours()
        text = (markdown_table(rows) + f"\nStored: {human(self.stored_bytes)} of {free} free at {self.store} "
                f"({'fits' if self.fits() else 'does NOT fit'}); {self.folds} fold(s), {self.epochs} epochs, "
                f"{self.devices} device(s); feature mode asked: {self.requested}.\n"
                f"\nEncoder time as planned: {stored_h:,.2f} {dev} hours to extract the stored features once, "
                f"{live_h:,.2f} {dev} hours for the live ones over the run ({live_h / max(self.folds, 1):,.2f} a "
                f"fold), on {self.devices} device(s) together: about {(stored_h + live_h) / self.devices:,.2f} "
                f"hours of wall time (encoder passes x their operations at {self.flop_per_second / 1e12:g} TFLOP/s, "
                f"{self.throughput_source}; training the models' own layers comes on top).\n")
        counted = {i: (once, every) for i, (once, every) in hours.items() if once is not None and every is not None}
        moved = [e for e in self.entries if e.mode == "live" and id(e) in counted]
        if moved and self.requested == "auto":
            need = sum(e.bytes for e in self.entries) / HEADROOM
            saved = sum(counted[id(e)][1] - counted[id(e)][0] for e in moved)
            text += (f"\nComputed live because they do not fit: {', '.join(e.encoder for e in moved)}. With --store "
                     f"(or $SERMO_FEATURES) on a disk with {human(need)} free they would be stored, saving about "
                     f"{saved:,.1f} {dev} hours.\n")
        return text


def human(n: float) -> str:
    """Bytes in B, KB, MB, GB, TB (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def free_space(root: Path) -> int | None:
    """Free bytes on the disk holding ``root`` (its nearest existing parent)."""
    p = Path(root).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None


def _frames(df, rate: float | None, max_tokens: int) -> np.ndarray:
    """Frames (or tokens) per utterance of a manifest slice."""
    seconds = df["duration"].fillna(0.0).to_numpy(dtype=float)
    if rate is None:  # tokens: the transcript's words, else speech at an average rate
        words = np.array([len(str(t).split()) if t is not None else w for t, w in
                          zip(df["transcript"], seconds * WORDS_PER_SECOND)], dtype=float)
        return np.minimum(np.ceil(words * TOKENS_PER_WORD) + 2, max_tokens)
    if rate == 0:
        return np.ones(len(df))
    return np.ceil(seconds * rate)


def plan_run(uses, cfg, manifest: Manifest, usable: set[str], folds, store_root: Path, *,
             devices: int = 1, epochs=None) -> Plan:
    """The plan of a run reading ``uses`` (a system's :class:`~sermo.systems.api.FeatureUse` list)
    for the ``usable`` utterances of ``manifest`` over ``folds``; ``epochs``: ``(modality,
    training utterances) -> epochs`` where a system derives them (default ``train.epochs``).

    Raises:
        PlanError: an unknown ``data.feature_mode``.
    """
    from sermo.encoders.base import EncoderError
    from sermo.encoders.registry import encoder_dtype, encoder_shape
    from sermo.training.cost import flop_per_second_of_audio, throughput

    requested = cfg.data.feature_mode
    if requested not in MODES:
        raise PlanError(f"data.feature_mode {requested!r}; known: {', '.join(MODES)}")
    df = manifest.df
    used_df = df[df["id"].isin(usable)]
    # utterances a model sees per epoch (training and validation), averaged over the folds
    per_epoch = sum(sum(u in usable for u in (*f.train, *f.valid)) for f in folds) / max(len(folds), 1)
    seconds = dict(zip(df["id"], df["duration"].fillna(0.0).astype(float)))
    seconds_per_epoch = sum(sum(seconds.get(u, 0.0) for u in (*f.train, *f.valid) if u in usable)
                            for f in folds) / max(len(folds), 1)
    train_size = int(round(sum(sum(u in usable for u in f.train) for f in folds) / max(len(folds), 1)))
    entries: dict[tuple, PlanEntry] = {}
    for use in uses:
        try:
            n_layers, dim, rate = encoder_shape(use.encoder)
        except EncoderError as exc:  # not available here: its row will say so; the plan cannot size it
            key = (use.encoder, tuple(use.layers) if use.layers is not None else None)
            entries.setdefault(key, PlanEntry(use.encoder, key[1], (0, 0), None, what=[]))
            entries[key].what.append(f"{use.what}: unknown here ({str(exc).split('(')[0].strip()})")
            continue
        layers = tuple(use.layers) if use.layers is not None else None
        key = (use.encoder, layers)
        if key not in entries:
            part = df if use.corpus else used_df
            frames = _frames(part, rate, cfg.data.max_tokens if rate is None else 10**9)
            kept = len(layers) if layers is not None else n_layers
            width = 4 if (cfg.data.feature_dtype or encoder_dtype(use.encoder)) == "float32" else 2
            entries[key] = PlanEntry(use.encoder, layers, (kept, dim), rate, utterances=len(part),
                                     hours=float(part["duration"].fillna(0).sum() / 3600),
                                     bytes=int(frames.sum() * kept * dim * width + ENTRY_OVERHEAD * len(part)),
                                     analysis=use.analysis,
                                     flop_per_second_of_audio=flop_per_second_of_audio(use.encoder, (n_layers, dim, rate)),
                                     epochs=int(epochs("text" if rate is None else "audio", train_size) if epochs
                                                else cfg.train.epochs))
        e = entries[key]
        e.readers += use.readers
        e.analysis = e.analysis and use.analysis
        e.what.append(use.what)
    flop_per_second, source, kind = throughput(cfg.train.accelerator)
    plan = Plan(list(entries.values()), Path(store_root), free_space(store_root), devices=devices,
                epochs=max((e.epochs for e in entries.values()), default=cfg.train.epochs), folds=len(folds),
                requested=requested, flop_per_second=flop_per_second, throughput_source=source, device_kind=kind)
    for e in plan.entries:
        e.passes_per_epoch = int(round(e.readers * per_epoch))
        e.seconds_per_epoch = e.readers * seconds_per_epoch
        e.mode = "live" if requested == "live" else "stored"
    if requested == "auto":  # the largest go live until the rest fits
        for e in sorted(plan.entries, key=lambda x: -x.bytes):
            if plan.fits():
                break
            e.mode = "live"
    return plan


def check_plan(plan: Plan) -> None:
    """Stop a run whose stored features would not fit, before anything runs.

    Raises:
        PlanError: with the plan and the option that fits.
    """
    if not plan.fits():
        raise PlanError("the features this run stores would not fit on the store's disk:\n\n" + plan.table()
                        + "\nRun with --set data.feature_mode=auto (the largest encoders computed live on the "
                          "accelerator) or data.feature_mode=live, or point --store (or $SERMO_FEATURES) at a "
                          "larger disk.")

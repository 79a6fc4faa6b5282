"""Typed run configuration: YAML recipes only fill these dataclasses.

A recipe (``sermo/recipes/<system>.yaml``) has profiles (``paper``, ``demo``); each profile
gives ``data``, ``train`` and ``model`` sections. Every key is checked against the
dataclass it fills: an unknown or misspelt key is an error naming it and listing the valid
keys; a value out of its range or not one of its choices (declared with :func:`setting` on the
field) is an error naming the key. ``--set section.key=value`` overrides a value (parsed as
YAML: numbers, lists, null).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A recipe or override that does not fit the typed configuration."""


class RunError(ValueError):
    """A run that cannot learn what it was asked to (no labels for a row's task, non-finite
    features or losses); the message names the cause and what to do."""


def setting(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, min: float | None = None,
            gt: float | None = None, max: float | None = None, lt: float | None = None,
            choices: tuple | None = None):
    """A config field with the values it accepts: ``min``/``max`` (inclusive) and ``gt``/``lt``
    (exclusive) bounds for numbers (for lists: for each item), ``choices`` for anything.
    ``None`` always passes for an optional field. :func:`build` checks them."""
    meta = {k: v for k, v in (("min", min), ("gt", gt), ("max", max), ("lt", lt), ("choices", choices))
            if v is not None}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def check_value(value, meta: dict, where: str) -> None:
    """Raise :class:`ConfigError` when ``value`` breaks the bounds or choices of ``meta``."""
    if value is None:
        return
    if isinstance(value, (list, tuple)) and "choices" not in meta:
        for v in value:
            check_value(v, meta, where)
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    if "choices" in meta:
        items = value if isinstance(value, (list, tuple)) else [value]
        bad = [v for v in items if v not in meta["choices"]]
        if bad:
            raise ConfigError(f"{where}: {bad[0]!r} is not one of {', '.join(map(str, meta['choices']))}")
        return
    for key, ok, text in (("min", lambda b: value >= b, ">="), ("gt", lambda b: value > b, ">"),
                          ("max", lambda b: value <= b, "<="), ("lt", lambda b: value < b, "<")):
        if key in meta and not ok(meta[key]):
            raise ConfigError(f"{where}: {value!r} is out of range; it must be {text} {meta[key]:g}")



@dataclass
class DataConfig:
    """What the systems read.

    Attributes:
        audio_encoder: speech features (registry name, Hub id or folder; ``None``: no audio).
        audio_layers: hidden states of the audio encoder to load (``None``: all).
        text_encoder: token features of the transcripts (``None``: no text).
        text_layers: hidden states of the text encoder to load (``None``: all).
        label_space: category classes (``iemocap-4`` ...).
        protocol: fold scheme (``None``: the corpus default; an IEMOCAP protocol applies to
            IEMOCAP alone, other corpora get their default, see ``protocols.protocol_for``).
        transcripts: ``oracle`` or an ASR engine (``pocketsphinx``, ``whisper-base``, ...).
        max_frames: audio frames kept per utterance (longer ones are cut).
        max_tokens: tokens kept per transcript.
        feature_dtype: how stored features are kept: ``float16``, ``float32``, or ``None`` (each
            encoder's own: float16, float32 for eGeMAPS, whose values overflow float16).
        feature_mode: ``stored`` (frozen encoders' features extracted once into the store),
            ``live`` (the encoders run inside the data path on the accelerator, nothing stored)
            or ``auto`` (stored while the run's features fit in the store's free space, the
            largest encoders live otherwise; ``sermo run --plan`` shows the choice).
        frame_pool: every ``frame_pool`` consecutive frames of a frozen speech encoder averaged into
            one as they are read (1: none), once in the data path instead of inside the model every
            epoch; a system's own ``subsample`` counts the frames averaged in all, so it averages
            only what the data path has not (the rows that fine-tune an encoder's top layers read
            its frames unpooled and average after them).
        pool_finetuned: the rows that fine-tune an encoder's top layers read the stored state below
            them pooled by ``frame_pool`` too (a speed trade for CPU demos: the layers then attend
            over a quarter of the frames; the papers' encoders see every frame).
        memory_gb: gigabytes of decoded (pooled) features the run keeps in memory after their
            first read, shared by all its encoders and folds (0: read the store every time).
        max_folds: run only the protocol's first ``max_folds`` folds (``None``: all; ``--folds``
            chooses others); the report says which of how many ran.
        speech_padding: how speech models without an attention mask (HuBERT Base, wav2vec 2.0
            Base, DistilHuBERT) run utterances of unequal lengths, frozen or fine-tuned: ``bucket``
            (zero-padded batches, as their model cards recommend: lengths rounded up to 0.25 s when
            features are extracted, so an utterance's features never depend on its batch),
            ``exact`` (one forward pass per utterance, unpadded: slow on a GPU) or ``auto`` (the
            default: frozen features ``bucket`` everywhere, so their store key does not depend on
            the device; fine-tuning ``bucket`` on a GPU and ``exact`` on the CPU, where batching
            gains nothing and padding costs).
        loader_workers: processes that prepare training batches (reading features and audio)
            beside the training; ``None``: up to 4 on a GPU (none for features computed live),
            none on the CPU. Batches for a GPU are pinned in page-locked memory.
    """

    audio_encoder: str | None = "logmel"
    audio_layers: list[int] | None = None
    text_encoder: str | None = "minilm"
    text_layers: list[int] | None = None
    label_space: str = "iemocap-4"
    protocol: str | None = None
    transcripts: str = "oracle"
    max_frames: int = setting(3000, min=1)
    max_tokens: int = setting(128, min=1)
    feature_dtype: str | None = setting(None, choices=("float16", "float32"))
    feature_mode: str = setting("auto", choices=("auto", "stored", "live"))
    frame_pool: int = setting(1, min=1)
    pool_finetuned: bool = False
    memory_gb: float = setting(4.0, min=0.0)
    max_folds: int | None = setting(None, min=1)
    speech_padding: str = setting("auto", choices=("auto", "bucket", "exact"))
    loader_workers: int | None = setting(None, min=0)


@dataclass
class TrainConfig:
    """How models are trained.

    Attributes:
        epochs, batch_size, lr, weight_decay: the usual.
        scheduler: ``plateau`` (lr x ``plateau_factor`` after ``plateau_patience`` epochs without
            improvement of the validation loss, paper 000), ``warmup`` (linear warm-up over
            ``warmup_steps`` then constant, paper 003), ``noam`` (ESPnet's WarmupLR, paper 002:
            linear warm-up to ``lr`` at ``warmup_steps``, then decay as the inverse square root
            of the step) or ``none``.
        warmup_steps: the warm-up's length in optimizer steps (the paper's).
        warmup_max_share: the warm-up takes at most this share of the run's real number of steps
            (epochs x batches), so that the peak ``lr`` is reached; when it cuts the paper's warm-up
            the report says so (``None``: never cut).
        early_stopping: stop after this many epochs without improvement (``None``: never).
        grad_clip: gradient norm clipping (``None``: off).
        encoder_lr_scale: learning rate of fine-tuned encoder layers relative to the head.
        seed: seeds everything; the same seed gives the same run.
        select: what picks the best epoch on validation: ``loss`` (the mean validation loss) or
            ``metrics`` ((1 - CCC mean) + (1 - UA) over the whole validation set).
        devices, num_nodes, strategy: Lightning's; ``devices > 1`` trains with DDP.
        accelerator: ``auto`` (the GPU when there is one), ``cpu`` or ``gpu``: training, feature
            extraction, transcription and prediction of the run all run there.
        precision: ``32``, ``16-mixed`` or ``bf16-mixed`` (autocast in training and prediction).
    """

    epochs: int = setting(50, min=1)
    batch_size: int = setting(32, min=1)
    lr: float = setting(5e-4, gt=0)
    weight_decay: float = setting(0.0, min=0)
    scheduler: str = setting("plateau", choices=("plateau", "warmup", "noam", "none"))
    plateau_factor: float = setting(0.75, gt=0, max=1)
    plateau_patience: int = setting(2, min=0)
    warmup_steps: int = setting(0, min=0)
    warmup_max_share: float | None = setting(0.3, gt=0, max=1)
    early_stopping: int | None = setting(None, min=1)
    grad_clip: float | None = setting(1.0, gt=0)
    encoder_lr_scale: float = setting(0.25, min=0)
    seed: int = setting(0, min=0)
    select: str = setting("metrics", choices=("loss", "metrics"))
    devices: int = setting(1, min=1)
    num_nodes: int = setting(1, min=1)
    accelerator: str = setting("auto", choices=("auto", "cpu", "gpu", "cuda"))
    precision: str = setting("32", choices=("32", "16-mixed", "bf16-mixed"))
    strategy: str = "auto"


@dataclass
class RunConfig:
    """A resolved recipe profile: ``model`` is the system's own config dataclass."""

    system: str
    profile: str
    data: DataConfig
    train: TrainConfig
    model: typing.Any
    description: str = ""
    extends: tuple[str, ...] = ()
    """The profiles ``profile`` extends, nearest first (its deviations from the paper are theirs too)."""

    @property
    def lineage(self) -> tuple[str, ...]:
        """The profile and those it extends."""
        return (self.profile, *self.extends)

    def to_dict(self) -> dict:
        """Plain dict (saved as ``config.yaml`` in the run folder)."""
        return {"system": self.system, "profile": self.profile, "description": self.description,
                "data": dataclasses.asdict(self.data), "train": dataclasses.asdict(self.train),
                "model": dataclasses.asdict(self.model)}


def build(cls, values: dict | None, where: str):
    """Instantiate dataclass ``cls`` from ``values``, checking every key and type.

    Raises:
        ConfigError: unknown key (with the valid ones), a value of the wrong type, out of its
            range or not one of its choices (see :func:`setting`).
    """
    values = dict(values or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in values.items():
        out[key] = _coerce(value, hints[key], f"{where}.{key}")
        check_value(out[key], dict(names[key].metadata), f"{where}.{key}")
    return cls(**out)


def _coerce(value, hint, where: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is typing.Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return build(hint, value, where)
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def recipe_path(system: str) -> Path:
    """The YAML recipe of a system."""
    return Path(__file__).resolve().parent / "recipes" / f"{system}.yaml"


def resolve_profile(profiles: dict, profile: str, path) -> tuple[dict, list[str]]:
    """The sections of ``profile`` and the profiles it extends, nearest first: a profile with
    ``extends: OTHER`` starts from OTHER's sections (itself resolved the same way) and replaces
    the keys it gives, section by section.

    Raises:
        ConfigError: no such profile, a cycle of ``extends``, or an unknown section.
    """
    chain: list[str] = []
    name: str | None = profile
    while name is not None:
        if name not in profiles:
            what = f"no profile {name!r}" + (f" (extended by {chain[-1]!r})" if chain else "")
            raise ConfigError(f"{path}: {what}; profiles: {', '.join(profiles)}")
        if name in chain:
            raise ConfigError(f"{path}: profiles extend each other in a cycle: {' -> '.join(chain + [name])}")
        chain.append(name)
        name = (profiles[name] or {}).get("extends")
    chosen: dict[str, dict] = {}
    for name in reversed(chain):
        body = {k: v for k, v in (profiles[name] or {}).items() if k != "extends"}
        unknown = sorted(set(body) - {"data", "train", "model"})
        if unknown:
            raise ConfigError(f"{path} profile {name}: unknown section(s) {unknown}; valid: data, model, train"
                              " (and extends: a profile whose sections this one starts from)")
        for section, values in body.items():
            chosen.setdefault(section, {}).update(dict(values or {}))
    return chosen, chain[1:]


def load_recipe(system: str, profile: str, model_cls, overrides: list[str] | None = None, *,
                path: Path | None = None) -> RunConfig:
    """Read a system's recipe (``path``, default :func:`recipe_path`), pick a profile, apply
    ``--set`` overrides, validate everything.

    Raises:
        ConfigError: missing recipe or profile, unknown keys, bad values or overrides.
    """
    path = Path(path) if path is not None else recipe_path(system)
    if not path.is_file():
        raise ConfigError(f"no recipe for system {system!r} at {path}")
    recipe = yaml.safe_load(path.read_text()) or {}
    top = {"system", "description", "profiles"}
    if set(recipe) - top:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(set(recipe) - top)}; valid: {', '.join(sorted(top))}")
    chosen, extends = resolve_profile(recipe.get("profiles") or {}, profile, path)
    sections = {"data", "train", "model"}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in sections:
            raise ConfigError(f"--set takes section.key=value with section data, train or model; got {item!r}")
        try:
            chosen.setdefault(section, {})[name] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({problem}); a list reads [a, b], "
                              "a string with brackets or commas needs quotes") from None
    where = f"{system} recipe, profile {profile}"
    return RunConfig(
        system=system, profile=profile, description=str(recipe.get("description", "")),
        data=build(DataConfig, chosen.get("data"), f"{where}: data"),
        train=build(TrainConfig, chosen.get("train"), f"{where}: train"),
        model=build(model_cls, chosen.get("model"), f"{where}: model"), extends=tuple(extends),
    )


__all__ = ["ConfigError", "DataConfig", "TrainConfig", "RunConfig", "build", "load_recipe", "field", "setting"]

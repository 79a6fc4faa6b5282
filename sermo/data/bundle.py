"""Model bundles: a trained row saved as a folder that loads without unpickling anything.

::

    <bundle>/model.safetensors    the weights (safetensors: tensors only, no code)
    <bundle>/config.json          a :class:`BundleConfig`: system, row, the system's model
                                  config, the model spec (inputs, classes, embedded encoders),
                                  label space and scale, transcript engine, versions
    <bundle>/encoders/speech|text the configuration, feature-extractor and tokenizer files of an
                                  embedded encoder that came from a local folder (a continued
                                  pre-training, a user's checkpoint): its architecture, whose
                                  weights are in model.safetensors, so a copied bundle needs
                                  nothing outside itself

This module is the only one that writes or reads a bundle: the engine fills a
:class:`BundleConfig`, the predictor gets one back.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from sermo.data.io import atomic_path, write_text_atomic
from sermo.data.spec import FeatureInput, InputSpec, ModelSpec

BUNDLE_VERSION = 2
EMBEDDED = "./encoders/"
"""How a spec names an encoder whose architecture the bundle holds (relative to the bundle)."""
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")


class BundleError(ValueError):
    """A folder that is not a usable sermo bundle (the message says what is wrong)."""


@dataclass
class BundleConfig:
    """The ``config.json`` of a bundle.

    Attributes:
        system, row: which system's row the model is.
        modalities: what it uses (``audio``, ``text``).
        model: the system's resolved ``model`` recipe section.
        spec: what the model reads and how it is rebuilt.
        label_space: the label space (``LabelSpace.to_dict()``).
        label_scale: ``[min, max]`` of the dimensions it answers on (the first corpus's).
        label_scales: every training corpus's scale.
        transcripts: the transcript source it was trained with (``oracle`` or an ASR engine).
        trained_on: what it learned from: ``corpora`` (names), ``builtin`` (sermo's synthetic
            corpus), ``label_space``, ``utterances`` and ``speakers`` of its training part
            (``{}``: a bundle written before sermo recorded it).
        bundle_version, sermo_version: what wrote it.
    """

    system: str
    row: str
    modalities: list[str]
    model: dict
    spec: ModelSpec
    label_space: dict
    label_scale: list[float] | None = None
    label_scales: dict[str, list[float]] = field(default_factory=dict)
    transcripts: str = "oracle"
    trained_on: dict = field(default_factory=dict)
    bundle_version: int = BUNDLE_VERSION
    sermo_version: str = ""

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"system": self.system, "row": self.row, "modalities": list(self.modalities), "model": self.model,
                "spec": self.spec.to_dict(), "label_space": self.label_space, "label_scale": self.label_scale,
                "label_scales": self.label_scales, "transcripts": self.transcripts, "trained_on": self.trained_on,
                "normalisation": "dims predicted on [0, 1] of the label scale, returned on the label scale",
                "bundle_version": self.bundle_version, "sermo_version": self.sermo_version}

    @classmethod
    def from_dict(cls, d: dict) -> "BundleConfig":
        """Inverse of :meth:`to_dict`; bundles of version 1 are converted.

        Raises:
            BundleError: a field is missing or malformed.
        """
        try:
            version = int(d.get("bundle_version", 1))
            spec = ModelSpec.from_dict(d["spec"]) if version >= 2 else _spec_v1(d)
            return cls(system=str(d["system"]), row=str(d["row"]), modalities=list(d["modalities"]),
                       model=dict(d["model"]), spec=spec, label_space=dict(d["label_space"]),
                       label_scale=d.get("label_scale"), label_scales=dict(d.get("label_scales") or {}),
                       transcripts=str(d.get("transcripts") or "oracle"),
                       trained_on=dict(d.get("trained_on") or {}), bundle_version=version,
                       sermo_version=str(d.get("sermo_version", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"the bundle config lacks or garbles {exc}") from None


def _spec_v1(d: dict) -> ModelSpec:
    """The model spec of a version-1 bundle (encoder entries and a loose ``input_spec``)."""
    spec = d["input_spec"]
    mods = d["modalities"]
    speech, text_model, top = spec.get("speech_model"), spec.get("text_model"), spec.get("text_top")

    def feature(entry):
        ident = entry["identity"]
        layers = ident.get("layers")
        return FeatureInput(entry["name"], tuple(layers) if layers is not None else None, int(entry["layers"]),
                            int(entry["dim"]), entry.get("frame_rate"), ident.get("weights"),
                            ident.get("dtype", "float16"))

    audio = feature(d["audio_encoder"]) if "audio" in mods and not speech and d.get("audio_encoder") else None
    tokens = text_model if text_model and top is None else None
    text = feature(d["text_encoder"]) if "text" in mods and not tokens and d.get("text_encoder") else None
    inputs = InputSpec(audio=audio, text=text, wave=bool(speech), tokens=tokens, speaker=bool(spec.get("speaker")),
                       max_frames=int(d.get("max_frames") or 3000), max_tokens=int(d.get("max_tokens") or 128))
    options = {k: spec[k] for k in ("text_top", "label_dims") if spec.get(k) is not None}
    return ModelSpec(inputs, int(spec["num_classes"]), speech, text_model, options)


def _embed_encoders(folder: Path, spec: ModelSpec) -> ModelSpec:
    """Copy the non-weight files of every embedded encoder that is a local folder into
    ``folder/encoders/<kind>`` and name it there (its weights are the bundle's own)."""
    changes: dict[str, str] = {}
    moved: dict[str, str] = {}
    for kind, src in (("speech", spec.speech_model), ("text", spec.text_model)):
        if not src or str(src).startswith(EMBEDDED) or not Path(src).is_dir():
            continue
        dest = folder / "encoders" / kind
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for f in Path(src).iterdir():
            if f.is_file() and not f.name.endswith(WEIGHT_SUFFIXES):
                shutil.copy(f, dest / f.name)
        moved[src] = changes[f"{kind}_model"] = EMBEDDED + kind
    if spec.inputs.tokens in moved:
        spec = replace(spec, inputs=replace(spec.inputs, tokens=moved[spec.inputs.tokens]))
    return replace(spec, speech_model=changes.get("speech_model", spec.speech_model),
                   text_model=changes.get("text_model", spec.text_model)) if changes else spec


def _resolve_encoders(folder: Path, spec: ModelSpec) -> ModelSpec:
    """The spec with the bundle's embedded encoders named by their folder in ``folder``."""
    def where(name):
        return str(folder.resolve() / name[2:]) if isinstance(name, str) and name.startswith(EMBEDDED) else name

    changes = {k: where(getattr(spec, k)) for k in ("speech_model", "text_model")}
    changes["inputs"] = replace(spec.inputs, tokens=where(spec.inputs.tokens))
    return replace(spec, **changes)


def save_bundle(folder: str | Path, model, config: BundleConfig) -> Path:
    """Write ``model``'s weights and ``config`` to ``folder`` atomically (the config last: a folder
    without it is no bundle); encoders from local folders are embedded (see the module's docs)."""
    from safetensors.torch import save_file

    import sermo

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = replace(config, spec=_embed_encoders(folder, config.spec))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    config.sermo_version = config.sermo_version or sermo.__version__
    write_text_atomic(folder / "config.json", json.dumps(config.to_dict(), indent=2, default=str) + "\n")
    return folder


def read_bundle(folder: str | Path) -> tuple[BundleConfig, dict]:
    """The config and weights of a bundle; nothing in it is executed or unpickled.

    Raises:
        BundleError: not a bundle (a file is missing), or a file that cannot be read.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise BundleError(f"{folder}: not a sermo bundle (no {name})")
    try:
        raw = json.loads((folder / "config.json").read_text())
        weights = load_file(str(folder / "model.safetensors"))
    except Exception as exc:  # a corrupt safetensors or JSON file
        raise BundleError(f"{folder}: unreadable bundle ({exc})") from None
    try:
        config = BundleConfig.from_dict(raw)
        check_names(config)
        check_values(config)
    except BundleError as exc:
        raise BundleError(f"{folder / 'config.json'}: {exc}") from None
    return replace(config, spec=_resolve_encoders(folder, config.spec)), weights


# what a bundle may name its classes, system and row: shown to users (the page, tables), so
# plain text only, never markup or control characters
_CLASS_NAME = re.compile(r"[^\x00-\x1f\x7f<>`]{1,64}")
_ROW_NAME = re.compile(r"[\w@.+/-]{1,200}")


SYNTHETIC_CAVEAT = ("this model was trained on sermo's built-in synthetic corpus (espeak-ng speech, simulated "
                    "annotators): on real speech its predictions mean little. A model for real audio comes from "
                    "`sermo run` on a corpus of real speech (IEMOCAP, MSP-Podcast or your own)")
"""What ``sermo predict``, :class:`~sermo.serving.Predictor` and the service say about a bundle
trained on the built-in corpus."""


def check_values(config: "BundleConfig") -> None:
    """Raise :class:`BundleError` for numbers no model sermo writes could have (a length of 0, a
    scale of NaN, a class count that is not the label space's): each would surface later as a
    division by zero or a type error deep in prediction."""
    import math

    def scale_ok(s) -> bool:
        return (isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                                     for v in s) and s[0] < s[1])

    if config.label_scale is not None and not scale_ok(config.label_scale):
        raise BundleError(f"label_scale = {config.label_scale!r}: two finite numbers, the lower first")
    for corpus, s in config.label_scales.items():
        if not scale_ok(s):
            raise BundleError(f"label_scales[{corpus!r}] = {s!r}: two finite numbers, the lower first")
    spec = config.spec
    if spec.num_classes != len(config.label_space.get("classes") or []):
        raise BundleError(f"spec.num_classes = {spec.num_classes} but the label space has "
                          f"{len(config.label_space.get('classes') or [])} classes")
    inputs = spec.inputs
    for what, value in (("max_frames", inputs.max_frames), ("max_tokens", inputs.max_tokens)):
        if not isinstance(value, int) or value < 1:
            raise BundleError(f"spec.inputs.{what} = {value!r}: a whole number of at least 1")
    if inputs.max_wave_seconds is not None and not (isinstance(inputs.max_wave_seconds, (int, float))
                                                    and math.isfinite(inputs.max_wave_seconds)
                                                    and inputs.max_wave_seconds > 0):
        raise BundleError(f"spec.inputs.max_wave_seconds = {inputs.max_wave_seconds!r}: seconds above 0")
    for kind, entry in (("audio", inputs.audio), ("text", inputs.text)):
        if entry is None:
            continue
        for what in ("num_layers", "dim", "pool"):
            value = getattr(entry, what)
            if not isinstance(value, int) or value < 1:
                raise BundleError(f"spec.inputs.{kind}.{what} = {value!r}: a whole number of at least 1")


def check_names(config: "BundleConfig") -> None:
    """Raise :class:`BundleError` when a class, system or row name of a bundle is not plain text
    (a tampered config.json could otherwise put markup in front of every user of its page)."""
    classes = config.label_space.get("classes") if isinstance(config.label_space, dict) else None
    if not isinstance(classes, list) or not classes:
        raise BundleError("label_space.classes must be a non-empty list of class names")
    for i, c in enumerate(classes):
        if not isinstance(c, str) or not _CLASS_NAME.fullmatch(c):
            raise BundleError(f"label_space.classes[{i}] = {str(c)[:80]!r} is not a class name (1-64 characters, "
                              "no markup or control characters); the bundle was made elsewhere or edited")
    for what, value in (("system", config.system), ("row", config.row)):
        if not isinstance(value, str) or not _ROW_NAME.fullmatch(value):
            raise BundleError(f"{what} = {str(value)[:80]!r} is not a name sermo writes (letters, digits, _ @ . + / -)")


def check_shapes(make, weights: dict, where: str) -> None:
    """Build the model ``make()`` describes on the meta device (shapes, no memory) and raise
    :class:`BundleError` when its tensors are not the bundle's weights: another shape, or
    tensors the weights do not have. A model whose construction needs real tensors (a
    fine-tuned encoder read from its checkpoint) is checked after it is built instead."""
    import torch

    try:
        with torch.device("meta"):
            planned = make()
    except (KeyError, ValueError):
        raise
    except Exception:  # noqa: BLE001 - construction that cannot run on meta tensors
        return
    state = planned.state_dict()
    for name, tensor in state.items():
        if name not in weights:
            raise BundleError(f"{where}: the config describes a tensor {name} the weights do not have; was the "
                              "bundle edited?")
        if tuple(tensor.shape) != tuple(weights[name].shape):
            raise BundleError(f"{where}: the weights do not fit the model its config describes ({name}: shape "
                              f"{tuple(weights[name].shape)} in the weights, {tuple(tensor.shape)} in the config's "
                              "model); was the bundle edited?")

"""Model bundles: a trained row saved as a folder that loads without unpickling anything.

::

    <bundle>/model.safetensors    the weights (safetensors: tensors only, no code)
    <bundle>/config.json          a :class:`BundleConfig`: system, row, the system's model
                                  config, the model spec (inputs, classes, embedded encoders),
                                  label space and scale, transcript engine, versions

This module is the only one that writes or reads a bundle: the engine fills a
:class:`BundleConfig`, the predictor gets one back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sermo.data.io import atomic_path, write_text_atomic
from sermo.data.spec import FeatureInput, InputSpec, ModelSpec

BUNDLE_VERSION = 2


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
    bundle_version: int = BUNDLE_VERSION
    sermo_version: str = ""

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"system": self.system, "row": self.row, "modalities": list(self.modalities), "model": self.model,
                "spec": self.spec.to_dict(), "label_space": self.label_space, "label_scale": self.label_scale,
                "label_scales": self.label_scales, "transcripts": self.transcripts,
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
                       transcripts=str(d.get("transcripts") or "oracle"), bundle_version=version,
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


def save_bundle(folder: str | Path, model, config: BundleConfig) -> Path:
    """Write ``model``'s weights and ``config`` to ``folder`` atomically."""
    from safetensors.torch import save_file

    import sermo

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
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
        return BundleConfig.from_dict(raw), weights
    except BundleError as exc:
        raise BundleError(f"{folder}: {exc}") from None

"""What a trained model reads and how it is rebuilt: typed, JSON round-trippable specs.

A row's model is described by a :class:`ModelSpec`: its :class:`InputSpec` (exactly which
inputs a batch must carry for it, and how each is made), the number of classes, the
fine-tuned encoders it embeds and the system's own build options. The engine writes it into
the bundle; the predictor reads it back to rebuild the model and to featurise new audio with
the same pipeline training used (``sermo.features.pipeline``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class FeatureInput:
    """Frames of a frozen encoder, stored in the feature store or computed on the fly.

    Attributes:
        encoder: the name ``sermo.encoders.get_encoder`` takes (registry name, Hub id, folder).
        layers: the hidden-state indices kept (``None``: all the encoder has).
        num_layers: hidden states the model sees (``len(layers)`` or all).
        dim: width of a frame.
        frame_rate: frames per second (``None`` for text tokens and utterance-level features).
        weights: hash of the encoder's weights the model was trained on (``None``: unknown).
        dtype: the dtype the features were stored in.
        pool: consecutive frames averaged into one as they are read (``data.frame_pool``; 1: none);
            ``frame_rate`` is the rate after it.
        padding: how a speech encoder without an attention mask batched its inputs (``bucket`` or
            ``exact``; bundles from before this field: ``exact``).
    """

    encoder: str
    layers: tuple[int, ...] | None
    num_layers: int
    dim: int
    frame_rate: float | None = None
    weights: str | None = None
    dtype: str = "float16"
    pool: int = 1
    padding: str = "exact"

    @property
    def shape(self) -> tuple[int, int]:
        """``(num_layers, dim)``: what a model over these features is built for."""
        return self.num_layers, self.dim

    def to_dict(self) -> dict:
        """JSON-ready form."""
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureInput":
        """Inverse of :meth:`to_dict`."""
        layers = d.get("layers")
        return cls(str(d["encoder"]), tuple(int(i) for i in layers) if layers is not None else None,
                   int(d["num_layers"]), int(d["dim"]), d.get("frame_rate"), d.get("weights"),
                   str(d.get("dtype", "float16")), int(d.get("pool", 1)), str(d.get("padding", "exact")))


@dataclass(frozen=True)
class InputSpec:
    """Exactly what a batch carries for one row's model (see :class:`~sermo.data.batch.Batch`).

    Attributes:
        audio: ``batch.audio``: speech features ``(B, L, T, D)`` (or ``None``).
        text: ``batch.text``: token features of the transcript (or ``None``).
        wave: ``batch.wave``: 16 kHz samples, for a speech encoder fine-tuned inside the model.
        tokens: ``batch.tokens``: token ids of the transcript from this text encoder's tokenizer
            (registry name, Hub id or folder), for a text encoder fine-tuned inside the model.
        speaker: ``batch.speaker``: the speaker's Resemblyzer embedding (a new utterance, whose
            speaker is unknown, gets its own).
        max_frames: audio frames kept per utterance.
        max_tokens: tokens kept per transcript.
        max_wave_seconds: seconds of samples kept in ``wave`` (``None``: all).
    """

    audio: FeatureInput | None = None
    text: FeatureInput | None = None
    wave: bool = False
    tokens: str | None = None
    speaker: bool = False
    max_frames: int = 3000
    max_tokens: int = 128
    max_wave_seconds: float | None = None

    @property
    def needs_transcript(self) -> bool:
        """Whether the model reads the words (features or token ids of a transcript)."""
        return self.text is not None or self.tokens is not None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        d = asdict(self)
        d["audio"] = self.audio.to_dict() if self.audio else None
        d["text"] = self.text.to_dict() if self.text else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        """Inverse of :meth:`to_dict`."""
        return cls(audio=FeatureInput.from_dict(d["audio"]) if d.get("audio") else None,
                   text=FeatureInput.from_dict(d["text"]) if d.get("text") else None,
                   wave=bool(d.get("wave", False)), tokens=d.get("tokens"), speaker=bool(d.get("speaker", False)),
                   max_frames=int(d.get("max_frames", 3000)), max_tokens=int(d.get("max_tokens", 128)),
                   max_wave_seconds=d.get("max_wave_seconds"))


@dataclass
class ModelSpec:
    """Everything besides the weights and the system's config that rebuilds a row's model.

    Attributes:
        inputs: what the model reads.
        num_classes: classes of the label space.
        speech_model, text_model: fine-tuned encoders embedded in the model (registry name, Hub
            id or folder): their architecture is rebuilt from the checkpoint, their weights come
            from the bundle.
        options: the system's own build arguments (JSON-ready; e.g. label-embedding widths).
    """

    inputs: InputSpec
    num_classes: int
    speech_model: str | None = None
    text_model: str | None = None
    options: dict = field(default_factory=dict)

    @property
    def audio(self) -> tuple[int, int] | None:
        """``(layers, dim)`` of the audio features, or ``None``."""
        return self.inputs.audio.shape if self.inputs.audio else None

    @property
    def text(self) -> tuple[int, int] | None:
        """``(layers, dim)`` of the text features, or ``None``."""
        return self.inputs.text.shape if self.inputs.text else None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"inputs": self.inputs.to_dict(), "num_classes": self.num_classes, "speech_model": self.speech_model,
                "text_model": self.text_model, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        """Inverse of :meth:`to_dict`."""
        return cls(InputSpec.from_dict(d["inputs"]), int(d["num_classes"]), d.get("speech_model"),
                   d.get("text_model"), dict(d.get("options") or {}))

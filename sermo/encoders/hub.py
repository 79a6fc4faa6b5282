"""Loading Hugging Face checkpoints from a Hub id or a local folder, offline first."""

from __future__ import annotations

import os
from pathlib import Path

from sermo.encoders.base import EncoderError


def quiet_transformers() -> None:
    """No per-load progress bars from transformers: sermo shows its own."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def resolve_checkpoint(source: str, *, offline: bool = False) -> str:
    """A local folder holding ``source``: the folder itself, or the Hub cache's snapshot (and,
    unless ``offline`` or ``HF_HUB_OFFLINE`` is set, a download).

    Raises:
        EncoderError: neither a folder nor a cached Hub model; the message says how to
            point sermo at a local copy.
    """
    quiet_transformers()
    if Path(source).is_dir():
        return str(Path(source).resolve())
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(source, local_files_only=True)
    except Exception:
        pass
    if not offline and os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True"):
        try:
            from huggingface_hub import snapshot_download

            folder = snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
            if not list(Path(folder).glob("*.safetensors")):  # published as pytorch_model.bin only
                folder = snapshot_download(source, allow_patterns=["*.json", "*.bin", "*.txt", "*.model"])
            return folder
        except Exception:
            pass
    raise EncoderError(
        f"the model {source!r} is neither a local folder nor in the Hugging Face cache, and the Hub cannot be "
        f"reached. On a machine with internet run `huggingface-cli download {source} --local-dir DIR`, copy DIR "
        "here and pass the folder instead of the name (or set HF_HOME to a cache that holds it)."
    )


def weight_files(folder: str) -> list[str]:
    """The weight files of a checkpoint folder (safetensors preferred)."""
    p = Path(folder)
    files = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.bin"))
    if not files:
        raise EncoderError(f"{folder}: no *.safetensors or *.bin weights in the checkpoint folder")
    return [str(f) for f in files]


def load_pretrained(cls, folder: str, **kwargs):
    """``cls.from_pretrained(folder, **kwargs)`` for a transformers model class, refusing weights
    that are more than tensors: a ``pytorch_model.bin`` loads only with PyTorch's ``weights_only``
    unpickler (transformers' default, insisted on here), so a pickle that would run code is
    rejected before any of it runs.

    Raises:
        EncoderError: the weights file is not a plain tensor file (the message names it).
    """
    import pickle

    kwargs.setdefault("weights_only", True)
    if not kwargs["weights_only"]:
        raise EncoderError("sermo never loads weights with weights_only=False")
    try:
        return cls.from_pretrained(folder, **kwargs)
    except (pickle.UnpicklingError, RuntimeError, OSError) as exc:
        text = str(exc)
        if isinstance(exc, pickle.UnpicklingError) or "weights only" in text.lower() or "weights_only" in text:
            raise EncoderError(f"{folder}: refusing its weights: the .bin file holds more than tensors (a pickle "
                               f"that would run code?): {text.splitlines()[0][:200]}") from None
        raise


def load_or_build(cls, folder: str, *, config=None):
    """``load_pretrained(cls, folder)``, or, for a folder holding a configuration and no weights
    (an encoder embedded in a bundle, whose weights the bundle holds), the architecture with
    fresh weights that the caller then overwrites."""
    try:
        weight_files(folder)
    except EncoderError:
        if config is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(folder)
        return cls.from_config(config)
    return load_pretrained(cls, folder, **({"config": config} if config is not None else {}))

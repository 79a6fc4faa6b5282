"""Where models run: ``--accelerator {auto,cpu,gpu}`` resolved to a torch device, and mixed
precision for inference that matches training's."""

from __future__ import annotations

import contextlib

ACCELERATORS = ("auto", "cpu", "gpu")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")


class AcceleratorError(ValueError):
    """An accelerator that is not known or not present here (the message says what to use)."""


def resolve_device(accelerator: str = "auto"):
    """The torch device for ``accelerator``: ``auto`` is the GPU when there is one (the current
    CUDA device, so each DDP rank keeps its own), else the CPU.

    Raises:
        AcceleratorError: an unknown name, or ``gpu`` on a machine without one.
    """
    import torch

    name = {"cuda": "gpu"}.get(accelerator, accelerator)
    if name not in ACCELERATORS:
        raise AcceleratorError(f"unknown accelerator {accelerator!r}; known: {', '.join(ACCELERATORS)}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AcceleratorError("--accelerator gpu, but torch sees no GPU here (is a CUDA build of torch installed "
                               "and a driver present?); use --accelerator cpu or auto")
    import os

    # a DDP rank uses its own GPU: LOCAL_RANK is set by the launcher before Lightning sets the device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))


def lightning_accelerator(accelerator: str) -> str:
    """The name Lightning's Trainer takes for ``accelerator`` (checked like :func:`resolve_device`)."""
    resolve_device(accelerator)
    return {"cuda": "gpu"}.get(accelerator, accelerator)


def autocast(device, precision: str = "32"):
    """A context in which inference runs at ``precision`` on ``device`` (a no-op for ``32``)."""
    import torch

    if precision not in PRECISIONS:
        raise AcceleratorError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)

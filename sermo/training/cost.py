"""What an encoder's passes cost in accelerator time, for the plan (``sermo run --plan``).

A pass of a transformer encoder over ``n`` frames costs about ``2 x 12 d^2 x layers x n`` floating
point operations (attention projections ``4 d^2`` and a feed-forward of ``4 d`` a side ``8 d^2``,
per frame and layer, two operations a multiply-add); wav2vec 2.0 and HuBERT's convolutional front
end adds about 4.9 GFLOP per second of audio (seven convolutions of 512 channels from 16 kHz
down to 50 Hz), Whisper's two convolutions over the log-mel frames ``2 x 3 x (80 + 3 d) x d`` per
100 Hz frame.

Operations become hours through a throughput in operations per second: measured on this machine
when ``sermo bench extract`` has run here (it keeps what it measured in ``throughput.json`` under
``$SERMO_MODELS``), else the documented figure :data:`DOCUMENTED`: 25 TFLOP/s for a GPU (frozen
encoders run in float32: about 40% of an H100's 67 TFLOP/s float32 peak, what batched,
length-bucketed encoder inference reaches) and 0.1 TFLOP/s for a CPU. These are estimates to plan
with, within a factor of two or three, not promises.
"""

from __future__ import annotations

import json
from pathlib import Path

DOCUMENTED = {"gpu": 25e12, "cpu": 0.1e12}
"""Operations per second an encoder pass reaches when nothing was measured here."""
CNN_FLOP_PER_SECOND = 4.9e9
"""wav2vec 2.0 / HuBERT's convolutional front end, per second of 16 kHz audio."""


def flop_per_second_of_audio(encoder: str, shape: tuple[int, int, float | None]) -> float | None:
    """Operations of one forward pass over a second of audio (``None`` for text encoders and the
    CPU-only acoustic ones: log-mel, eGeMAPS, Resemblyzer)."""
    layers, dim, rate = shape
    if rate is None or rate == 0 or encoder in ("logmel", "egemaps", "egemaps-functionals", "resemblyzer"):
        return None
    transformer = 2 * 12 * dim * dim * max(layers - 1, 1) * rate
    if "whisper" in encoder:
        front = 2 * 3 * (80 + 3 * dim) * dim * 100.0
    else:
        front = CNN_FLOP_PER_SECOND
    return float(transformer + front)


def throughput_file() -> Path:
    """Where ``sermo bench extract`` keeps what it measured (beside the converted models)."""
    from sermo.encoders.whisper import models_root

    return models_root() / "throughput.json"


def device_name() -> str:
    """The name measured throughputs are kept under: the CUDA device's, else ``cpu``."""
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def throughput(accelerator: str = "auto") -> tuple[float, str, str]:
    """Operations per second of encoder passes, where the figure comes from, and the kind of
    device it is for (``GPU`` or ``CPU``). Plans are for a GPU unless ``accelerator`` is ``cpu``:
    the figure ``sermo bench extract`` measured on this machine's GPU (or CPU) when it has run
    here, else the documented one."""
    kind = "cpu" if accelerator == "cpu" else "gpu"
    name = device_name()
    try:
        measured = json.loads(throughput_file().read_text())
    except (OSError, ValueError):
        measured = {}
    entry = measured.get(name) if (name == "cpu") == (kind == "cpu") else None
    if isinstance(entry, dict) and float(entry.get("flop_per_second", 0)) > 0:
        return float(entry["flop_per_second"]), f"measured on {name} by `sermo bench extract`", kind.upper()
    return DOCUMENTED[kind], f"documented for a {kind.upper()}; `sermo bench extract` measures this machine's", \
        kind.upper()


def record_throughput(flop_per_second: float, *, device: str = "cpu") -> Path:
    """Keep a measured throughput for ``device`` (``cpu`` or a CUDA device's name) in
    :func:`throughput_file` (written atomically), for later plans on this machine."""
    from sermo.data.io import write_text_atomic

    path = throughput_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[device] = {"flop_per_second": float(flop_per_second)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1))
    return path


def hours(flop: float, flop_per_second: float) -> float:
    """Device hours for ``flop`` operations."""
    return flop / flop_per_second / 3600.0

"""Model bundles: a trained row saved as a folder that loads without unpickling anything.

::

    <bundle>/model.safetensors    the weights (safetensors: tensors only, no code)
    <bundle>/config.json          system, row, model config, encoders (identity, layers, dims),
                                  label space, label scale, transcript engine, sermo version
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sermo.data.io import atomic_path, write_text_atomic

BUNDLE_VERSION = 1


def save_bundle(folder: str | Path, model: torch.nn.Module, config: dict) -> Path:
    """Write ``model``'s weights and ``config`` (JSON-ready) to ``folder`` atomically."""
    from safetensors.torch import save_file

    import sermo

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    meta = {**config, "bundle_version": BUNDLE_VERSION, "sermo_version": sermo.__version__}
    write_text_atomic(folder / "config.json", json.dumps(meta, indent=2, default=str) + "\n")
    return folder


def read_bundle(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The config and weights of a bundle; nothing in it is executed or unpickled.

    Raises:
        FileNotFoundError: the folder lacks ``config.json`` or ``model.safetensors``.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: not a sermo bundle (no {name})")
    return json.loads((folder / "config.json").read_text()), load_file(str(folder / "model.safetensors"))

"""Serving trained systems: the :class:`Predictor` (torch), the exported-model runtime
(:class:`~sermo.serving.runtime.OnnxPredictor`, no torch), long-recording segmentation
(:class:`Segmenter`) and the HTTP service (``sermo serve``).

Names load on first use, so ``sermo.serving.runtime`` imports without torch.
"""

from __future__ import annotations

_HOMES = {"BundleError": "sermo.data.bundle", "Predictor": "sermo.serving.predictor",
          "Prediction": "sermo.serving.core", "Segmenter": "sermo.serving.segment",
          "OnnxPredictor": "sermo.serving.runtime"}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'sermo.serving' has no attribute {name!r}")

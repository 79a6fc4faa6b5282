"""Serving trained systems: bundles, the :class:`Predictor`, long-recording segmentation and
the HTTP service (``sermo serve``)."""

from sermo.serving.predictor import BundleError, Prediction, Predictor

__all__ = ["BundleError", "Prediction", "Predictor"]

"""Serving trained systems: bundles (and, with the prediction issue, the Predictor and HTTP service)."""

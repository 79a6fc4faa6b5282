"""The built-in synthetic corpus (``sermo synth``): emotional speech in real corpus layouts."""

from sermo.data.synth.corpus import GROUND_TRUTH, SynthError, SynthResult, synthesize_corpus

__all__ = ["GROUND_TRUTH", "SynthError", "SynthResult", "synthesize_corpus"]

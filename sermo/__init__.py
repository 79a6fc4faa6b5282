"""sermo: speech emotion recognition from audio and transcripts.

Five published systems on one common base; see README.md and the design notes.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``sermo.Predictor`` without importing torch and transformers on ``import sermo``
    if name in ("Predictor", "Prediction"):
        from sermo.serving import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'sermo' has no attribute {name!r}")

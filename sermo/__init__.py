"""sermo: speech emotion recognition from audio and transcripts.

Five published systems on one common base; see README.md and the design notes.
"""

__version__ = "0.1.0"

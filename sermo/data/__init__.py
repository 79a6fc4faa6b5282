"""The ground floor: audio I/O, manifests, corpus loaders, label spaces, protocols, synthesis.

Nothing here imports from the rest of sermo but its version (a bundle records which sermo made it).
"""

from sermo.data.audio import AudioError, load_audio
from sermo.data.labels import LABEL_SPACES, LabelSpace, get_label_space
from sermo.data.manifest import DIMENSIONS, Manifest, ManifestError
from sermo.data.protocols import Fold, Protocol, ProtocolError, build_protocol

__all__ = ["AudioError", "load_audio", "LABEL_SPACES", "LabelSpace", "get_label_space", "DIMENSIONS",
           "Manifest", "ManifestError", "Fold", "Protocol", "ProtocolError", "build_protocol"]

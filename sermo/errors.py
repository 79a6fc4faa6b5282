"""The errors a user can act on; the CLI prints them as one line instead of a traceback."""

from sermo.accelerator import AcceleratorError
from sermo.data.audio import AudioError
from sermo.data.bundle import BundleError
from sermo.data.corpora import CorpusError
from sermo.data.corpora.iemocap import IemocapLayoutError
from sermo.data.corpora.msp_podcast import MspLayoutError
from sermo.data.corpora.table import TableLayoutError
from sermo.data.labels import LabelSpaceError
from sermo.data.manifest import ManifestError
from sermo.data.protocols import ProtocolError
from sermo.data.synth.corpus import SynthError
from sermo.encoders.base import EncoderError
from sermo.config import ConfigError, RunError


class ServeError(OSError):
    """``sermo serve`` cannot start where it was asked to (a port in use, not allowed)."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    AudioError, IemocapLayoutError, MspLayoutError, TableLayoutError, ManifestError, ProtocolError,
    SynthError, EncoderError, ConfigError, FileNotFoundError, BundleError, AcceleratorError,
    RunError, CorpusError, ServeError, LabelSpaceError,
)

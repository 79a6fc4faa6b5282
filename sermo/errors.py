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
from sermo.serving.core import ExportError


class ServeError(OSError):
    """``sermo serve`` cannot start where it was asked to (a port in use, not allowed)."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    AudioError, IemocapLayoutError, MspLayoutError, TableLayoutError, ManifestError, ProtocolError,
    SynthError, EncoderError, ConfigError, FileNotFoundError, BundleError, AcceleratorError,
    RunError, CorpusError, ServeError, LabelSpaceError, ExportError,
)


def environment_error(exc: BaseException) -> str | None:
    """One line for what the machine ran out of or refused (a full disk, a permission, memory, a
    damaged store index); ``None`` for anything else (a bug: its traceback is shown)."""
    import errno
    import sqlite3

    text = str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text \
            or "iostream error" in text or "unexpected pos" in text:
        filename = getattr(exc, "filename", None)
        where = f" writing {filename}" if filename else ""
        return (f"the disk is full{where} ({text.splitlines()[0][:200]}); free some space and run the same command "
                "again: what was finished is kept, and a stage resumes from its last epoch")
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or text}; make it readable (or writable) by this user"
    if isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower():
        return (f"out of memory ({text.splitlines()[0][:200]}); lower train.batch_size or the model's sizes, or "
                "run where there is more memory")
    if isinstance(exc, sqlite3.DatabaseError):
        return (f"the feature store's index is damaged ({text}); move its content.sqlite aside and run again: the "
                "store is a cache, features are computed again")
    return None

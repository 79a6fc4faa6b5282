"""The feature store: frozen encoders' outputs on disk, computed once, reused by every run.

Layout under the store root::

    <identity key>/identity.json           the encoder identity (name, weights, layers, dtype)
    <identity key>/<k[:2]>/<k>.npy         (layers, frames, dim) features of content key k
    <identity key>/<k[:2]>/<k>.json        shape, dtype, sha256 of the array bytes, frame rate,
                                           tokens and word ids (text encoders)
    content.sqlite                          audio file (path, size, mtime, segment) -> content key

An entry is addressed by the encoder's identity and the content it encodes: the hash of
the utterance's 16 kHz samples and segment bounds (audio) or of its words (text), so a
moved or renamed corpus reuses its features and an edited file does not. Both files of an
entry are written atomically, the metadata last, so a killed extraction leaves no entry
half-written. Reads are memory-mapped; :meth:`FeatureStore.verify` recomputes the
checksum and reports a damaged entry, which extraction then recomputes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sermo.data.audio import load_audio
from sermo.data.io import atomic_path, write_text_atomic
from sermo.encoders.base import EncoderIdentity, EncoderOutput

ENV_VAR = "SERMO_FEATURES"


def default_store_root() -> Path:
    """``$SERMO_FEATURES``, else ``$XDG_CACHE_HOME/sermo/features`` (``~/.cache/sermo/features``)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "sermo" / "features"


def audio_content_key(samples: np.ndarray, start: float | None, end: float | None) -> str:
    """Content key of an utterance: sha256 of its 16 kHz float32 samples and segment bounds."""
    h = hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
    h.update(f"|{_bound(start)}|{_bound(end)}".encode())
    return h.hexdigest()[:32]


def text_content_key(text: str) -> str:
    """Content key of a transcript."""
    return hashlib.sha256(("text:" + text).encode("utf-8")).hexdigest()[:32]


def _bound(x) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{float(x):.4f}"


class DamagedEntry(RuntimeError):
    """A store entry whose files are missing, truncated or fail their checksum."""


@dataclass
class Features:
    """One stored entry: ``hidden`` is a read-only memory map ``(layers, frames, dim)``."""

    hidden: np.ndarray
    frame_rate: float | None
    tokens: list[str] = field(default_factory=list)
    word_ids: list[int] = field(default_factory=list)


class FeatureStore:
    """Content-addressed on-disk store of encoder outputs.

    Args:
        root: the store folder (default :func:`default_store_root`).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_store_root()
        self.root.mkdir(parents=True, exist_ok=True)
        index = self.root / "content.sqlite"
        try:
            self._open(index)
        except sqlite3.DatabaseError as exc:  # damaged: it only maps files to content keys, a cache
            import warnings

            if getattr(self, "_db", None) is not None:
                self._db.close()
            aside = index.with_name(index.name + ".damaged")
            index.replace(aside)
            warnings.warn(f"{index}: damaged ({exc}); kept as {aside.name} and started afresh (files are hashed "
                          "again; stored features are found again by their content)", stacklevel=2)
            self._open(index)

    def _open(self, index: Path) -> None:
        self._db = sqlite3.connect(index, timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS audio (path TEXT, size INTEGER, mtime INTEGER, "
                         "seg TEXT, key TEXT, PRIMARY KEY (path, size, mtime, seg))")
        if "samples" not in {row[1] for row in self._db.execute("PRAGMA table_info(audio)")}:
            self._db.execute("ALTER TABLE audio ADD COLUMN samples INTEGER")  # stores made before it existed
        self._db.execute("CREATE TABLE IF NOT EXISTS asr (engine TEXT, key TEXT, text TEXT, PRIMARY KEY (engine, key))")
        self._db.execute("CREATE TABLE IF NOT EXISTS phones (key TEXT, text TEXT, segments TEXT, "
                         "PRIMARY KEY (key, text))")
        self._db.commit()

    # -- what was derived from the audio: transcripts, phone alignments ------------------
    def transcript(self, engine: str, key: str) -> str | None:
        """The transcript ASR ``engine`` (its cache key) made of the audio with content key ``key``."""
        row = self._db.execute("SELECT text FROM asr WHERE engine=? AND key=?", (engine, key)).fetchone()
        return None if row is None else row[0]

    def put_transcript(self, engine: str, key: str, text: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO asr VALUES (?,?,?)", (engine, key, text))
        self._db.commit()

    def phones(self, key: str, text_key: str) -> str | None:
        """The phone alignment (JSON) of the audio with content key ``key`` to a transcript (``text_key``)."""
        row = self._db.execute("SELECT segments FROM phones WHERE key=? AND text=?", (key, text_key)).fetchone()
        return None if row is None else row[0]

    def put_phones(self, key: str, text_key: str, segments: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO phones VALUES (?,?,?)", (key, text_key, segments))
        self._db.commit()

    # -- content keys -------------------------------------------------------------------
    def known_audio_key(self, path: str, start=None, end=None) -> str | None:
        """The content key of an audio segment if this store has hashed that file before."""
        st = os.stat(path)
        row = self._db.execute("SELECT key FROM audio WHERE path=? AND size=? AND mtime=? AND seg=?",
                               (str(path), st.st_size, st.st_mtime_ns, f"{_bound(start)}|{_bound(end)}")).fetchone()
        return row[0] if row else None

    def audio_key(self, path: str, start=None, end=None, samples: np.ndarray | None = None) -> str:
        """Content key of an audio segment (loads and hashes it unless indexed already)."""
        known = self.known_audio_key(path, start, end)
        if known:
            return known
        if samples is None:
            samples = load_audio(path, start=_none(start), end=_none(end))
        key = audio_content_key(samples, start, end)
        st = os.stat(path)
        self._db.execute("INSERT OR REPLACE INTO audio (path, size, mtime, seg, key, samples) VALUES (?,?,?,?,?,?)",
                         (str(path), st.st_size, st.st_mtime_ns, f"{_bound(start)}|{_bound(end)}", key, len(samples)))
        self._db.commit()
        return key

    def audio_samples(self, path: str, start=None, end=None) -> int:
        """How many 16 kHz samples an audio segment has (remembered with its content key)."""
        st = os.stat(path)
        where = (str(path), st.st_size, st.st_mtime_ns, f"{_bound(start)}|{_bound(end)}")
        row = self._db.execute("SELECT samples FROM audio WHERE path=? AND size=? AND mtime=? AND seg=?",
                               where).fetchone()
        if row is not None and row[0] is not None:
            return int(row[0])
        samples = load_audio(path, start=_none(start), end=_none(end))
        self.audio_key(path, start, end, samples=samples)
        self._db.execute("UPDATE audio SET samples=? WHERE path=? AND size=? AND mtime=? AND seg=?",
                         (len(samples), *where))
        self._db.commit()
        return len(samples)

    # -- entries --------------------------------------------------------------------------
    def folder(self, identity: EncoderIdentity) -> Path:
        """The folder of one encoder identity (created with its identity.json)."""
        d = self.root / identity.key()
        if not (d / "identity.json").is_file():
            d.mkdir(parents=True, exist_ok=True)
            write_text_atomic(d / "identity.json", json.dumps(identity.__dict__, default=list, indent=2) + "\n")
        return d

    def _paths(self, identity: EncoderIdentity, key: str) -> tuple[Path, Path]:
        base = self.folder(identity) / key[:2] / key
        return base.with_suffix(".npy"), base.with_suffix(".json")

    def has(self, identity: EncoderIdentity, key: str) -> bool:
        """Whether a complete entry exists (metadata present and array of the right size)."""
        npy, meta = self._paths(identity, key)
        if not (meta.is_file() and npy.is_file()):
            return False
        try:
            info = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return npy.stat().st_size == info.get("file_bytes")

    def put(self, identity: EncoderIdentity, key: str, output: EncoderOutput) -> None:
        """Write one entry atomically (array first, metadata last)."""
        npy, meta = self._paths(identity, key)
        npy.parent.mkdir(parents=True, exist_ok=True)
        arr = np.ascontiguousarray(output.hidden)
        with atomic_path(npy) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr)
        info = {"shape": list(arr.shape), "dtype": str(arr.dtype), "sha256": _sha(arr),
                "file_bytes": npy.stat().st_size, "frame_rate": output.frame_rate,
                "tokens": list(output.tokens), "word_ids": [int(w) for w in output.word_ids]}
        write_text_atomic(meta, json.dumps(info))

    def get(self, identity: EncoderIdentity, key: str) -> Features:
        """Memory-mapped features of one entry.

        Raises:
            KeyError: no entry.
            DamagedEntry: the files are inconsistent (recompute it with ``sermo extract``).
        """
        npy, meta = self._paths(identity, key)
        if not meta.is_file():
            raise KeyError(key)
        try:
            info = json.loads(meta.read_text())
            arr = np.load(npy, mmap_mode="r")
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            raise DamagedEntry(f"{npy}: unreadable feature entry ({exc})") from None
        if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
            raise DamagedEntry(f"{npy}: shape {arr.shape} does not match its metadata {info['shape']}")
        return Features(arr, info["frame_rate"], info.get("tokens", []), info.get("word_ids", []))

    def verify(self, identity: EncoderIdentity, key: str) -> bool:
        """True when the entry exists and its array matches its checksum."""
        if not self.has(identity, key):
            return False
        npy, meta = self._paths(identity, key)
        try:
            feats = self.get(identity, key)
            return _sha(np.asarray(feats.hidden)) == json.loads(meta.read_text())["sha256"]
        except (DamagedEntry, KeyError, OSError, ValueError):
            return False

    def discard(self, identity: EncoderIdentity, key: str) -> None:
        """Remove an entry (metadata first, so a crash never leaves metadata without data)."""
        npy, meta = self._paths(identity, key)
        for p in (meta, npy):
            if p.exists():
                p.unlink()

    def close(self) -> None:
        """Close the content index."""
        self._db.close()


def _sha(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _none(x):
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)

"""Reading CTranslate2's ``model.bin`` (the format faster-whisper's checkpoints ship in).

The file is little-endian: a ``uint32`` binary version, the spec's name (``uint16`` length with
the terminating NUL, then the bytes), a ``uint32`` revision and variable count, then per
variable its name, a ``uint8`` rank, the ``uint32`` dimensions, a ``uint8`` dtype id
(float32, int8, int16, int32, float16, bfloat16) and a ``uint32`` byte count followed by the
data; last, a ``uint32`` count of aliases, each a pair of names. Only tensors are read:
nothing in the file can execute.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from sermo.encoders.base import EncoderError

DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise EncoderError(f"{self.path}: truncated CTranslate2 model (ends inside a header)")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def string(self) -> str:
        n = self.take("H")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw.rstrip(b"\0").decode("utf-8")


def read_ct2_model(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """The spec name and the variables (name -> array) of a CTranslate2 ``model.bin``; aliases
    resolve to their variable's array. bfloat16 variables are returned as float32.

    Raises:
        EncoderError: not a CTranslate2 model file, or a damaged one.
    """
    path = Path(path)
    r = _Reader(path.read_bytes(), path)
    version = r.take("I")
    if not 1 <= version <= 10:
        raise EncoderError(f"{path}: not a CTranslate2 model (binary version {version})")
    spec = r.string()
    r.take("I")  # revision
    out: dict[str, np.ndarray] = {}
    for _ in range(r.take("I")):
        name = r.string()
        shape = [r.take("I") for _ in range(r.take("B"))]
        kind = r.take("B")
        nbytes = r.take("I")
        if kind >= len(DTYPES) or r.pos + nbytes > len(r.data):
            raise EncoderError(f"{path}: damaged CTranslate2 model at variable {name!r}")
        raw = r.data[r.pos:r.pos + nbytes]
        r.pos += nbytes
        if DTYPES[kind] == "bfloat16":
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=DTYPES[kind])
        out[name] = arr.reshape(shape) if shape else arr.reshape(())
    if r.pos < len(r.data):
        for _ in range(r.take("I")):
            alias, target = r.string(), r.string()
            if target in out:
                out[alias] = out[target]
    return spec, out

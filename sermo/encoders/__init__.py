"""Encoders: audio or text in, ``[layers, frames, dim]`` plus a frame rate out."""

from sermo.encoders.base import Encoder, EncoderError, EncoderIdentity, EncoderOutput
from sermo.encoders.registry import REGISTRY, get_encoder

__all__ = ["Encoder", "EncoderError", "EncoderIdentity", "EncoderOutput", "REGISTRY", "get_encoder"]

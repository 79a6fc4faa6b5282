"""webrtcvad, importable on any setuptools (it imports ``pkg_resources``, which setuptools >= 77
no longer ships): the segmenter and Resemblyzer (which imports it) load it through here."""

from __future__ import annotations

import sys
import types


def pkg_resources_shim() -> None:
    """Give webrtcvad the one ``pkg_resources`` function it uses where setuptools has none."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from importlib import metadata

        shim = types.ModuleType("pkg_resources")
        shim.get_distribution = lambda name: types.SimpleNamespace(version=metadata.version(name))  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim

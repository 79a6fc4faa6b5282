"""The systems, discovered: every module or package under ``sermo/systems/`` (and every
module named by a ``sermo.systems`` entry point of an installed package) that calls
:func:`~sermo.systems.api.register` at import is a system of ``sermo run`` and ``sermo demo``.

Adding a system is adding a module (or package) and its recipe; nothing here lists them.
The contract a system is written against is :mod:`sermo.systems.api` (``docs/systems.md``).
"""

from __future__ import annotations

import importlib
import pkgutil

from sermo.systems.api import Output
from sermo.systems.definition import REGISTRY as SYSTEMS
from sermo.systems.definition import SystemDef, register

INTERNAL = frozenset({"api", "common", "definition", "linear_probe"})
"""Modules under ``sermo/systems/`` that are shared code, not systems (``sermo.cli`` lists the
systems without importing this package, and skips the same names)."""

ENTRY_POINTS = "sermo.systems"


def available() -> list[str]:
    """Names of the system modules under ``sermo/systems/``, without importing them (for --help)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in INTERNAL and not m.name.startswith("_"))


def load_all() -> dict[str, SystemDef]:
    """Import every system module (ours and entry points') and return the registry, in the
    systems' ``order`` (the papers' order), then by name."""
    for name in available():
        importlib.import_module(f"{__name__}.{name}")
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINTS):
        ep.load()
    return dict(sorted(SYSTEMS.items(), key=lambda kv: (kv[1].order, kv[0])))


def get_system(name: str) -> SystemDef:
    """A registered system by name.

    Raises:
        ConfigError: unknown name; the message lists the registered ones.
    """
    from sermo.config import ConfigError

    if name not in SYSTEMS:
        load_all()
    if name not in SYSTEMS:
        raise ConfigError(f"unknown system {name!r}; known: {', '.join(load_all())}")
    return SYSTEMS[name]


__all__ = ["Output", "SystemDef", "SYSTEMS", "register", "available", "load_all", "get_system"]

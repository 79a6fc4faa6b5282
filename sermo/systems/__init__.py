"""The systems: each module registers one :class:`~sermo.systems.base.SystemDef`.

Registration is what puts a system into ``sermo run`` and ``sermo demo``: a new system
module listed in :data:`MODULES` is picked up without editing either.
"""

from __future__ import annotations

import importlib

from sermo.systems.base import Output, SystemDef

MODULES = ("baselines", "teacher_student", "distilled", "hierarchical", "label_embedding", "cross_representation")
SYSTEMS: dict[str, SystemDef] = {}


def register(system: SystemDef) -> SystemDef:
    """Add a system to the registry (called at import of its module)."""
    SYSTEMS[system.name] = system
    return system


def available() -> list[str]:
    """Names of the systems whose modules exist, without importing them (for --help)."""
    from importlib.util import find_spec

    return [name for name in MODULES if find_spec(f"sermo.systems.{name}") is not None]


def load_all() -> dict[str, SystemDef]:
    """Import every system module that exists and return the registry."""
    for name in MODULES:
        try:
            importlib.import_module(f"sermo.systems.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"sermo.systems.{name}":
                raise
    return SYSTEMS


def get_system(name: str) -> SystemDef:
    """A registered system by name.

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    systems = load_all()
    if name not in systems:
        raise ValueError(f"unknown system {name!r}; known: {', '.join(systems)}")
    return systems[name]


__all__ = ["Output", "SystemDef", "SYSTEMS", "register", "load_all", "get_system"]

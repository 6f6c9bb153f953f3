"""Decoder architectures: one module per architecture, found here by name.

Every module in this package that defines ``ARCH`` (an :class:`~turbo_vaed.decoders.base.Architecture`
instance) is registered under ``ARCH.name``; :func:`register` adds one from elsewhere (tests, plug-ins).
"""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from turbo_vaed.decoders.base import Architecture, Decoder, Imported, LoadReport, read_weights_file
from turbo_vaed.errors import UserError

__all__ = ["Architecture", "Decoder", "Imported", "LoadReport", "read_weights_file", "register",
           "get_architecture", "architectures", "as_decoder"]

_REGISTRY: dict[str, Architecture] = {}
_NOT_ARCH_MODULES = {"base", "store", "importer", "student_model"}
_discovered = False


def register(arch: Architecture) -> Architecture:
    """Add ``arch`` to the registry (replacing one of the same name)."""
    _REGISTRY[arch.name] = arch
    return arch


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_ARCH_MODULES or info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        arch = getattr(mod, "ARCH", None)
        if isinstance(arch, Architecture):
            _REGISTRY.setdefault(arch.name, arch)


def architectures() -> dict[str, Architecture]:
    """Every registered architecture, by name."""
    _discover()
    return dict(_REGISTRY)


def get_architecture(name: str) -> Architecture:
    """The architecture called ``name``, or a one-line :class:`UserError` listing the known ones."""
    archs = architectures()
    if name not in archs:
        raise UserError(f"unknown decoder architecture '{name}': choose one of {', '.join(sorted(archs))}")
    return archs[name]


def as_decoder(obj: object, checkpoint: str = "random") -> Decoder:
    """``obj`` as a :class:`Decoder`: a Decoder is returned as is; a module is matched to the architecture
    that owns it (its config read from the module)."""
    if isinstance(obj, Decoder):
        return obj
    for arch in architectures().values():
        if isinstance(obj, nn.Module) and arch.owns(obj):
            return Decoder(arch, arch.config_of(obj), obj, checkpoint)
    raise TypeError(f"no registered decoder architecture owns a {type(obj).__name__}")

"""Where an input's ``type`` strings become components: built-ins and plug-ins.

A component is a config dataclass (its keys declared with :func:`hpcvmc.config.option`) and a
``build`` function, registered under a section and a name:

    ========== ============================================= ====================================
    section    build signature                               returns (:mod:`hpcvmc.protocols`)
    ========== ============================================= ====================================
    system     ``build(cfg)``                                a System
    model      ``build(cfg, system)``                        a Model (flax module)
    sampler    ``build(cfg, system, seed, comm)``            a Sampler
    optimizer  ``build(cfg, steps)``                         an Optimizer
    ========== ============================================= ====================================

Built-in components register themselves in the module that implements them; those modules are
named in :data:`BUILTIN_MODULES` and imported the first time a component is looked up, so the
registry itself depends on nothing above it. A plug-in is named in the input as
``type = "module:Name"``: ``module`` is imported from the Python path, or else read from
``module.py`` in the folder of the input file being read (:func:`reading_input`) or in the
working directory, and ``Name`` is a :class:`Component` of the section. It is validated, hashed,
checkpointed and run exactly like a built-in. Other keys that name user code (a NetKet operator
function, a flax module) are loaded the same way with :func:`load_object`.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from hpcvmc.errors import InputError

SECTIONS = ("system", "model", "sampler", "optimizer")
"""The input sections whose ``type`` selects a component."""

BUILTIN_MODULES = (
    "hpcvmc.systems.lattice",
    "hpcvmc.systems.moire",
    "hpcvmc.systems.netket_bridge",
    "hpcvmc.models.rbm",
    "hpcvmc.models.vit",
    "hpcvmc.models.slater",
    "hpcvmc.models.psiformer",
    "hpcvmc.models.flax_model",
    "hpcvmc.sampling",
    "hpcvmc.continuum_sampling",
    "hpcvmc.optim.natural_gradient",
)
"""Modules that register the built-in components (imported on the first lookup)."""


@dataclass(frozen=True)
class Component:
    """One selectable implementation of a section.

    Attributes:
        section: "system", "model", "sampler" or "optimizer".
        name: the ``type`` value that selects it ("j1j2"; "module:Name" for a plug-in).
        config: its frozen, keyword-only config dataclass with a ``type: str`` field; optional
            ``validate(self, config)`` for checks across sections; a system config declares
            ``capabilities`` (frozenset of words), a model or sampler config ``requires``.
        build: turns a validated config into the object (signatures in the module docstring).
    """

    section: str
    name: str
    config: type
    build: Callable[..., Any]

    def __post_init__(self) -> None:
        if self.section not in SECTIONS:
            raise ValueError(f"Component section {self.section!r} is not one of {SECTIONS}")
        if "type" not in getattr(self.config, "__dataclass_fields__", {}):
            raise ValueError(f"{self.config.__name__} must be a dataclass with a field `type`")


_BUILTINS: dict[str, dict[str, Component]] = {section: {} for section in SECTIONS}
_loaded = False
_input_folder: contextvars.ContextVar[Path | None] = contextvars.ContextVar("input_folder",
                                                                            default=None)


@contextlib.contextmanager
def reading_input(folder: str | Path | None) -> Iterator[None]:
    """While an input file of ``folder`` is parsed and validated, ``module.py`` files are
    looked for there first (None: only in the working directory)."""
    token = _input_folder.set(None if folder is None else Path(folder).resolve())
    try:
        yield
    finally:
        _input_folder.reset(token)


def register(component: Component) -> Component:
    """Add a built-in component (called at import time by the module that implements it)."""
    _BUILTINS[component.section][component.name] = component
    return component


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def builtin_names(section: str) -> list[str]:
    """The ``type`` values of the built-in components of a section, in the order of
    :data:`BUILTIN_MODULES` (then of registration)."""
    _load_builtins()
    components = list(_BUILTINS[section].values())
    components.sort(key=lambda c: BUILTIN_MODULES.index(c.config.__module__))
    return [c.name for c in components]


def is_plugin(name: str) -> bool:
    """Whether a ``type`` value names a plug-in ("module:Name")."""
    return ":" in name


def load_object(spec: str, key: str) -> Any:
    """The object ``Name`` of ``spec = "module:Name"``.

    ``module`` is imported from the Python path; failing that, ``<module>.py`` is loaded from
    the folder of the input being read or else the working directory (and kept in
    ``sys.modules`` under ``module``, so a second lookup finds it).

    Raises:
        InputError: naming ``key`` when the module or the name cannot be found or loaded.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"{key} = {spec!r}: expected 'module:Name'")
    module = sys.modules.get(module_name)
    if module is None:
        module = _import(module_name, key, spec)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InputError(f"{key} = {spec!r}: module {module_name!r} has no {attr!r}") from None


def _import(module_name: str, key: str, spec: str) -> Any:
    """Import ``module_name`` from the path, else from ``<folder>/<module_name>.py`` in the
    input's folder or the working directory."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.split(".")[0] and exc.name != module_name:
            raise InputError(f"{key} = {spec!r}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported in one line
        raise InputError(f"{key} = {spec!r}: importing {module_name!r} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    name = module_name.replace(".", "/") + ".py"
    folders = [f for f in (_input_folder.get(), Path(".")) if f is not None]
    found = [folder / name for folder in folders if (folder / name).is_file()]
    if not found:
        where = " or ".join(str(folder / name) for folder in folders)
        raise InputError(f"{key} = {spec!r}: no module {module_name!r} on the Python path "
                         f"and no file {where}")
    path = found[0]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported in one line
        del sys.modules[module_name]
        raise InputError(f"{key} = {spec!r}: loading {path} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    return module


def lookup(section: str, name: str) -> Component:
    """The component selected by ``[section] type = name``.

    Raises:
        InputError: an unknown built-in name, or a plug-in that cannot be loaded or is not
            a Component of this section.
    """
    _load_builtins()
    key = f"{section}.type"
    if not is_plugin(name):
        try:
            return _BUILTINS[section][name]
        except KeyError:
            known = list(_BUILTINS[section])
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InputError(f"{key} = {name!r} is not one of {', '.join(map(repr, known))} "
                             f"or a plug-in 'module:Name'{hint}") from None
    found = load_object(name, key)
    if not isinstance(found, Component) or found.section != section:
        raise InputError(f"{key} = {name!r} is not an hpcvmc.registry.Component of section "
                         f"{section!r}")
    return found

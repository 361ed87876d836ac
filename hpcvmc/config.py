"""The TOML input: frozen, typed configuration objects with documented defaults.

An input file has the sections ``[system]``, ``[model]``, ``[sampler]``, ``[optimizer]`` and
``[run]``. The ``type`` key of the first four selects a component (:mod:`hpcvmc.registry`: a
built-in, or a plug-in ``"module:Name"``), whose config dataclass, declared beside its code with
:func:`option`, says every key once with its type, default and meaning: :func:`input_reference`
renders them as the Markdown tables of README.md (a test checks that the two agree). A model or
sampler config may declare ``requires`` (capability words) that the system config's
``capabilities`` must contain.

Unknown keys (with a "did you mean"), wrong types and impossible values raise
:class:`InputError` with a one-line message that names the key path; the CLI turns it into exit
code 2 before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from hpcvmc import registry
from hpcvmc.errors import InputError


def option(
    default: Any,
    doc: str,
    *,
    choices: tuple[Any, ...] | None = None,
    minimum: float | None = None,
    positive: bool = False,
    numerical: bool = False,
    hashed_when_set: bool = False,
) -> Any:
    """Declare a configuration key.

    Args:
        default: the default value (``dataclasses.MISSING`` for a required key).
        doc: one sentence on its meaning and units (rendered in the input reference).
        choices: the allowed values, if the key is an enumeration.
        minimum: the smallest allowed value (inclusive).
        positive: the value must be > 0.
        numerical: a key of [system] or [model] that changes how, not what, is computed
            (chunk sizes, the Laplacian method): left out of the physics hash, so a resume may
            change it.
        hashed_when_set: a key of [system] or [model] added after runs were written: left out
            of the physics hash while it has its default, so their checkpoints and exported
            states still match an input that does not set it.
    """
    meta = {"doc": doc, "choices": choices, "minimum": minimum, "positive": positive,
            "numerical": numerical, "hashed_when_set": hashed_when_set}
    return field(default=default, metadata=meta)


REQUIRED = dataclasses.MISSING


DTYPES = ("float64", "float32")
"""Compute precisions a network may use (``model.dtype``; parameters always stay float64)."""


# ------------------------------------------------------------------------------------------------
# Run
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Length, seed, output and checkpointing of a run."""

    steps: int = option(300, "Optimization steps.", minimum=0)
    seed: int = option(1, "Seed of every random stream (parameters, chains).", minimum=0)
    output: str = option("runs/default", "Output folder (relative to the working directory).")
    checkpoint_every: int = option(50, "Write a checkpoint every this many steps.", positive=True)
    checkpoint_minutes: float = option(
        0.0, "Also write one when this many minutes passed since the last (0 = off).", minimum=0.0
    )
    keep_checkpoints: int = option(3, "Newest checkpoints kept in output/checkpoints.", positive=True)
    measure_steps: int = option(
        0, "After the last step, sample this many steps with the parameters fixed: the final "
        "energy (and moire density, S(q), rho_K) from that many times the samples, in "
        "output/final.json (0 = off).", minimum=0
    )
    init_params: str = option(
        "", "Start a fresh run from the parameters of this checkpoint file, run folder (its "
        "newest valid checkpoint) or exported state (hpcvmc export; relative to the working "
        "directory): fine-tuning, e.g. after "
        "switching model.symmetrize; optimizer state, step count and chains start afresh; "
        "ignored once run.output has checkpoints (empty = initialize the model).",
    )
    platform: str = option(
        "auto", "JAX platform: auto (GPU if present), cpu or gpu.", choices=("auto", "cpu", "gpu")
    )


SECTIONS = (*registry.SECTIONS, "run")
"""Every section of an input: those whose ``type`` selects a component, then [run]."""
PHYSICS_SECTIONS = ("system", "model")


@dataclass(frozen=True, kw_only=True)
class Config:
    """A whole validated input."""

    system: Any
    model: Any
    sampler: Any
    optimizer: Any
    run: RunConfig
    text: str = field(default="", compare=False, repr=False)
    """The effective input as TOML text (file plus --set overrides)."""

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The effective input as nested plain dicts (unset optional keys left out)."""
        return {
            name: {k: v for k, v in dataclasses.asdict(getattr(self, name)).items() if v is not None}
            for name in SECTIONS
        }

    def physics_hash(self) -> str:
        """SHA-256 of the physics-relevant sections (system, model) without their numerical
        keys (``option(numerical=True)``) and without later-added keys at their defaults
        (``option(hashed_when_set=True)``): a resume must match it."""
        physics = {}
        for name in PHYSICS_SECTIONS:
            section = getattr(self, name)
            left_out = {f.name for f in dataclasses.fields(section)
                        if f.metadata.get("numerical")
                        or (f.metadata.get("hashed_when_set")
                            and getattr(section, f.name) == f.default)}
            physics[name] = {k: v for k, v in self.to_dict()[name].items() if k not in left_out}
        payload = json.dumps(physics, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


# ------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------
def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


_NOUNS = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _type_name(tp: Any) -> str:
    """'an integer', 'a list of lists of integers', 'a number or unset' ..."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is dict:
        return "a table"
    if origin is list:
        inner = _type_name(typing.get_args(tp)[0]).split(" ", 1)[1]
        return f"a list of {inner.replace('list ', 'lists ')}s".replace("ss", "s")
    noun = _NOUNS.get(tp, str(tp))
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float, ...)."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        for option_tp in options:
            try:
                return _coerce(value, option_tp, path)
            except InputError:
                continue
        raise InputError(f"{path} must be {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise InputError(f"{path} must be {_type_name(tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise InputError(f"{path} must be {_type_name(tp)}, got {value!r}")
        return {_coerce(k, key_tp, path): _coerce(v, item_tp, f"{path}.{k}")
                for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not -(2**63) <= value < 2**63:
            raise InputError(f"{path} = {value} does not fit in a 64-bit integer")
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):
            raise InputError(f"{path} must be finite, got {value!r}")
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise InputError(f"{path} must be {_type_name(tp)}, got {value!r}")
    return value


def _check_bounds(value: Any, meta: Mapping[str, Any], path: str) -> None:
    if value is None:
        return
    if meta["choices"] is not None and value not in meta["choices"]:
        allowed = ", ".join(repr(c) for c in meta["choices"])
        raise InputError(f"{path} = {value!r} is not one of {allowed}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise InputError(f"{path} = {value!r} must be >= {meta['minimum']}")
    if meta["positive"] and value <= 0:
        raise InputError(f"{path} = {value!r} must be > 0")


def section_class(name: str, raw: Mapping[str, Any]) -> type:
    """The config dataclass of section ``name`` as its ``type`` selects it ([run]: RunConfig).

    Raises:
        InputError: a missing or unknown ``type``, or a plug-in that cannot be loaded.
    """
    if name == "run":
        return RunConfig
    if "type" not in raw:
        known = ", ".join(map(repr, registry.builtin_names(name)))
        raise InputError(f"{name}.type is missing (one of {known}, or a plug-in 'module:Name')")
    if not isinstance(raw["type"], str):
        raise InputError(f"{name}.type must be a string, got {raw['type']!r}")
    return registry.lookup(name, raw["type"]).config


def _build_section(name: str, raw: Mapping[str, Any]) -> Any:
    """Turn one TOML table into its dataclass, checking keys, types and bounds."""
    cls = section_class(name, raw)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{name}.{key}"
        if key not in fields:
            raise InputError(f"unknown key {path}" + _did_you_mean(key, list(fields)))
        value = _coerce(value, hints[key], path)
        if key != "type":  # a plug-in's `type` is its "module:Name", not its default
            _check_bounds(value, fields[key].metadata, path)
        values[key] = value
    for key, f in fields.items():
        if key not in values and f.default is dataclasses.MISSING:
            raise InputError(f"{name}.{key} is required ({f.metadata['doc']})")
    return cls(**values)


def parse_overrides(overrides: list[str]) -> dict[str, dict[str, Any]]:
    """Parse ``--set section.key=value`` overrides; values use TOML syntax (bare words = strings).

    Raises:
        InputError: on a malformed override.
    """
    tables: dict[str, dict[str, Any]] = {}
    for item in overrides:
        path, sep, text = item.partition("=")
        section, dot, key = path.strip().partition(".")
        if not sep or not dot or not section or not key:
            raise InputError(f"--set {item!r}: expected section.key=value")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word, e.g. --set run.output=runs/x
        tables.setdefault(section, {})[key] = value
    return tables


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _to_toml_value(value: Any) -> str:
    if isinstance(value, dict):
        items = (f"{k if _BARE_KEY.fullmatch(k) else json.dumps(k)} = {_to_toml_value(v)}"
                 for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_to_toml_value(v) for v in value) + "]"
    return repr(value)


def to_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """Write nested dicts (section -> key -> value) as TOML text."""
    lines: list[str] = []
    for section, keys in tables.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_to_toml_value(v)}" for k, v in keys.items() if v is not None)
        lines.append("")
    return "\n".join(lines)


def from_tables(tables: Mapping[str, Mapping[str, Any]], base_dir: Path | None = None) -> Config:
    """Build and validate a Config from parsed TOML tables (plug-in files are looked for in
    ``base_dir``, the input file's folder).

    Raises:
        InputError: naming the key path of the first problem found.
    """
    with registry.reading_input(base_dir):
        return _validated(tables)


def _validated(tables: Mapping[str, Mapping[str, Any]]) -> Config:
    """The body of :func:`from_tables`."""
    for name in tables:
        if name not in SECTIONS:
            raise InputError(f"unknown section [{name}]" + _did_you_mean(name, list(SECTIONS)))
        if not isinstance(tables[name], dict):
            raise InputError(f"[{name}] must be a table of keys")
    for name in SECTIONS:
        if name not in tables:
            raise InputError(f"section [{name}] is missing")
    sections = {name: _build_section(name, tables[name]) for name in SECTIONS}
    config = Config(**sections)
    config = dataclasses.replace(config, text=to_toml(config.to_dict()))
    check_capabilities(config)
    for name in SECTIONS:
        validate: Callable[[Config], None] | None = getattr(sections[name], "validate", None)
        if validate is not None:
            validate(config)
    return config


def check_capabilities(config: Config) -> None:
    """Every capability a model or sampler ``requires`` is among the system's ``capabilities``
    (the model's, for what a sampler needs of the wave function, e.g. invariance).

    Raises:
        InputError: naming the section, its type and what the system lacks.
    """
    system = config.system
    provided = frozenset(getattr(system, "capabilities", ()))
    for name in ("model", "sampler"):
        section = getattr(config, name)
        missing = frozenset(getattr(section, "requires", ())) - provided
        if missing:
            has = ", ".join(map(repr, sorted(provided))) or "none"
            raise InputError(
                f"{name}.type = {section.type!r} needs a system with "
                f"{', '.join(map(repr, sorted(missing)))} (system.type = {system.type!r} "
                f"provides: {has})"
            )


def loads(text: str, overrides: list[str] | None = None, source: str = "<input>",
          base_dir: Path | None = None) -> Config:
    """Parse TOML text (plus ``section.key=value`` overrides) into a validated Config."""
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source}: not valid TOML: {exc}") from None
    for section, keys in parse_overrides(overrides or []).items():
        if section not in tables:
            tables[section] = {}
        if not isinstance(tables[section], dict):
            raise InputError(f"[{section}] must be a table of keys")
        tables[section].update(keys)
    return from_tables(tables, base_dir)


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read and validate an input file.

    Raises:
        InputError: a missing or unreadable file, bad TOML, or a bad key or value.
    """
    return loads(_read_input(path), overrides, source=str(path), base_dir=Path(path).parent)


def _read_input(path: str | Path) -> str:
    """The text of an input file.

    Raises:
        InputError: the file is missing or unreadable.
    """
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: no such input file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read input file ({exc})") from None


def load_system(path: str | Path, overrides: list[str] | None = None) -> Any:
    """The validated [system] of an input file, for commands that need only the system (a file
    with every section is validated whole).

    Raises:
        InputError: as :func:`load`, or a missing [system] section.
    """
    path = Path(path)
    with registry.reading_input(path.parent):
        return _system_section(path, overrides)


def _system_section(path: Path, overrides: list[str] | None) -> Any:
    """The body of :func:`load_system`."""
    try:
        tables = tomllib.loads(_read_input(path))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    for section, keys in parse_overrides(overrides or []).items():
        if not isinstance(tables.setdefault(section, {}), dict):
            raise InputError(f"[{section}] must be a table of keys")
        tables[section].update(keys)
    if all(name in tables for name in SECTIONS):
        return from_tables(tables, path.parent).system
    for name in tables:
        if name not in SECTIONS:
            raise InputError(f"unknown section [{name}]" + _did_you_mean(name, list(SECTIONS)))
    if not isinstance(tables.get("system"), dict):
        raise InputError(f"{path}: section [system] is missing")
    sections = {name: _build_section(name, keys) for name, keys in tables.items()}
    sections["system"].validate(None)  # the system's own checks read no other section
    return sections["system"]


def check_ranks(config: Config, n_ranks: int) -> None:
    """Checks that depend on the number of MPI ranks (chains must divide evenly)."""
    n_chains = getattr(config.sampler, "n_chains", None)
    if n_chains is not None and n_chains % n_ranks:
        raise InputError(
            f"sampler.n_chains = {n_chains} is not divisible by the number of ranks ({n_ranks})"
        )


# ------------------------------------------------------------------------------------------------
# Documentation
# ------------------------------------------------------------------------------------------------
def _format_default(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING:
        return "required"
    if f.default is None:
        return "unset"
    return f"`{_to_toml_value(f.default)}`"


def component_reference(section: str, kind: str | None, cls: type) -> str:
    """The Markdown table of one config dataclass (selected by ``type = kind``; None for
    [run]): key, type, default and meaning."""
    title = f"[{section}]" + (f" type = \"{kind}\"" if kind else "")
    out = [f"#### `{title}`", "", (cls.__doc__ or "").strip().splitlines()[0], ""]
    out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        doc = f.metadata["doc"]
        if f.metadata["choices"]:
            doc += " One of " + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + "."
        out.append(f"| `{f.name}` | {_type_name(hints[f.name])} | {_format_default(f)} | {doc} |")
    return "\n".join(out + [""])


def input_reference() -> str:
    """Markdown tables of every section, built-in type and key: type, default and meaning."""
    out = []
    for section in registry.SECTIONS:
        out += [component_reference(section, name, registry.lookup(section, name).config)
                for name in registry.builtin_names(section)]
    out.append(component_reference("run", None, RunConfig))
    return "\n".join(out)

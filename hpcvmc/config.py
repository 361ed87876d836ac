"""The TOML input: frozen, typed configuration objects with documented defaults.

An input file has the sections ``[system]``, ``[model]``, ``[sampler]``, ``[optimizer]`` and
``[run]``. Sections with a ``type`` key select their class
from a registry (``SYSTEMS``, ``MODELS``, ...). Every key is declared once, with its type,
default and meaning, in the dataclasses below: :func:`input_reference` renders them as the
Markdown table of README.md (a test checks that the two agree).

Unknown keys (with a "did you mean"), wrong types and impossible values raise
:class:`InputError` with a one-line message that names the key path; the CLI turns it into exit
code 2 before any work starts.
"""

from __future__ import annotations

import contextlib
import contextvars
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
from typing import Any, Callable, Iterator, Mapping


class InputError(Exception):
    """Bad input (a key, a value, a file). The message is one line naming what is wrong."""


def option(
    default: Any,
    doc: str,
    *,
    choices: tuple[Any, ...] | None = None,
    minimum: float | None = None,
    positive: bool = False,
    numerical: bool = False,
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
    """
    meta = {"doc": doc, "choices": choices, "minimum": minimum, "positive": positive,
            "numerical": numerical}
    return field(default=default, metadata=meta)


REQUIRED = dataclasses.MISSING


# ------------------------------------------------------------------------------------------------
# Systems
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class J1J2Config:
    """Spin 1/2 J1-J2 Heisenberg model on the L x L periodic square lattice, total Sz = 0."""

    type: str = option("j1j2", "System type.")
    L: int = option(REQUIRED, "Linear size of the L x L periodic lattice (sites).", minimum=2)
    J1: float = option(1.0, "Nearest-neighbour coupling (energy unit).")
    J2: float = option(0.0, "Next-nearest-neighbour (diagonal) coupling, in units of J1.")
    marshall_sign: bool = option(
        True, "Multiply the wave function by the Marshall sign (-1)^(N_up on sublattice A)."
    )
    chunk_size: int = option(
        256, "Configurations per network call in the local energy (bounds the memory; "
        "divided by the number of terms of a symmetrized ViT; 64-256 are fastest on a CPU, a "
        "GPU wants thousands).",
        positive=True, numerical=True,
    )

    def validate(self, cfg: Config) -> None:
        """Cross-key checks."""
        if (self.L * self.L) % 2:
            raise InputError(
                f"system.L = {self.L} gives {self.L ** 2} sites: total Sz = 0 needs an even "
                "number of sites"
            )

    @property
    def n_sites(self) -> int:
        """Number of lattice sites."""
        return self.L * self.L


NAMED_MOIRE_SUPERCELLS = (3, 9, 12, 21, 27)
LAPLACIAN_METHODS = ("forward", "loop", "hessian")


@dataclass(frozen=True, kw_only=True)
class MoireConfig:
    """2D electrons in a triangular moire potential with Coulomb repulsion on a supercell torus.

    Lengths in a_M, energies in E0 = hbar^2 / (m* a_M^2) (see docs/physics.md section 4).
    """

    type: str = option("moire", "System type.")
    m_star: float = option(0.35, "Effective mass m* in units of the electron mass.", positive=True)
    a_M: float = option(8.031, "Moire period a_M in nm.", positive=True)
    V: float = option(15.0, "Moire potential amplitude V in meV.")
    phi: float = option(45.0, "Moire potential phase phi in degrees.")
    epsilon: float = option(10.0, "Dielectric constant epsilon.", positive=True)
    V_E0: float | None = option(None, "V / E0 directly (overrides V when set).")
    U: float | None = option(
        None, "Coulomb strength U = a_M / a_B* directly (overrides epsilon when set).", minimum=0.0
    )
    sites: int = option(
        9, "Named supercell: its number of moire sites.",
        choices=NAMED_MOIRE_SUPERCELLS,
    )
    supercell: list[list[int]] | None = option(
        None, "General supercell as an integer matrix [[M00, M01], [M10, M11]] (overrides sites)."
    )
    n_electrons: int = option(REQUIRED, "Number of electrons N.", positive=True)
    spin_polarized: bool = option(True, "All electrons spin up (else N/2 up, N/2 down).")
    chunk_size: int = option(
        256, "Walkers per local-energy chunk (bounds the Laplacian's memory).", positive=True,
        numerical=True,
    )
    laplacian: str = option(
        "forward", "Laplacian of log psi in the kinetic energy: forward (folx forward Laplacian), "
        "loop (nested jvp per coordinate) or hessian (trace of the full Hessian, for checks).",
        choices=LAPLACIAN_METHODS, numerical=True,
    )

    def validate(self, cfg: Config) -> None:
        """Cross-key checks."""
        if self.supercell is not None:
            shape_ok = len(self.supercell) == 2 and all(len(row) == 2 for row in self.supercell)
            if not shape_ok:
                raise InputError("system.supercell must be a 2 x 2 integer matrix")
            (m00, m01), (m10, m11) = self.supercell
            if m00 * m11 - m01 * m10 == 0:
                raise InputError("system.supercell is singular (zero area)")
        if not self.spin_polarized and self.n_electrons % 2:
            raise InputError(
                f"system.n_electrons = {self.n_electrons} is odd: an unpolarized state needs an "
                "even number (or set system.spin_polarized = true)"
            )


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------
DTYPES = ("float64", "float32")


@dataclass(frozen=True, kw_only=True)
class RBMConfig:
    """Restricted Boltzmann machine with real parameters and complex output.

    log psi(s) = sum_j log cosh(a_j + i b_j), a = W_a s + c_a, b = W_b s + c_b.
    """

    type: str = option("rbm", "Model type.")
    alpha: int = option(2, "Hidden-unit density: alpha * n_sites hidden units.", positive=True)
    dtype: str = option(
        "float64", "Compute precision of the network (parameters, optimizer state, energies and "
        "the update stay float64).", choices=DTYPES,
    )

    def validate(self, cfg: Config) -> None:
        """Cross-key checks."""
        if not isinstance(cfg.system, J1J2Config):
            raise InputError("model.type = 'rbm' needs a lattice system (system.type = 'j1j2')")


@dataclass(frozen=True, kw_only=True)
class ViTConfig:
    """Vision Transformer over b x b patches (Viteritti, Rende, Becca; Rende & Viteritti)."""

    type: str = option("vit", "Model type.")
    patch: int = option(2, "Patch side b: the lattice is cut into (L/b)^2 tokens.", positive=True)
    d_model: int = option(16, "Token dimension d.", positive=True)
    n_heads: int = option(4, "Attention heads h (d must be divisible by h).", positive=True)
    n_layers: int = option(2, "Encoder blocks.", positive=True)
    attention: str = option(
        "factored", "Attention kind: position-only weights or softmax(QK^T).",
        choices=("factored", "standard"),
    )
    mlp_factor: int = option(4, "MLP hidden width in units of d.", positive=True)
    symmetrize: str = option(
        "none", "Projection onto lattice symmetries (costs one forward pass per group element: b^2 for translations, 16 b^2 for full).",
        choices=("none", "translations", "full"),
    )
    dtype: str = option(
        "float64", "Compute precision of the network (parameters, optimizer state, energies and "
        "the update stay float64).", choices=DTYPES,
    )

    def validate(self, cfg: Config) -> None:
        """Cross-key checks: d divisible by h, L divisible by b."""
        if self.d_model % self.n_heads:
            raise InputError(
                f"model.d_model = {self.d_model} is not divisible by model.n_heads = {self.n_heads}"
            )
        if isinstance(cfg.system, J1J2Config) and cfg.system.L % self.patch:
            raise InputError(
                f"system.L = {cfg.system.L} is not divisible by model.patch = {self.patch}"
            )
        if not isinstance(cfg.system, J1J2Config):
            raise InputError("model.type = 'vit' needs a lattice system (system.type = 'j1j2')")


@dataclass(frozen=True, kw_only=True)
class SlaterConfig:
    """Slater determinants of periodic supercell plane waves, optional two-body Jastrow (moire).

    psi = exp(J) sum_k w_k det[phi^k_j(r_i)], phi^k_j(r) = sum_Q C^k[Q, j] exp(i Q.r) over the
    supercell reciprocal vectors |Q| <= g_max |g_1| (hpcvmc/models/slater.py).
    """

    type: str = option("slater", "Model type.")
    n_determinants: int = option(1, "Number of determinants K (summed with learnable weights).",
                                 positive=True)
    g_max: float = option(
        3.0, "Plane-wave cut-off: norm of Q at most g_max times that of g_1 (4 pi/sqrt3 per a_M); "
        "3.0 = the default Hartree-Fock basis.",
        positive=True,
    )
    init: str = option(
        "bands", "Initial orbitals: lowest non-interacting (band) orbitals or the lowest "
        "spin-polarized Hartree-Fock state (hpcvmc.reference.hf, basis cut-off q_max = g_max).",
        choices=("bands", "hf"),
    )
    init_noise: float = option(
        0.0, "Random perturbation of the initial orbitals (relative norm; > 0 needed for K > 1).",
        minimum=0.0,
    )
    jastrow: bool = option(
        False, "Two-body Jastrow u(d) = c d/(1 + b d) with the 2D cusps c = U (opposite spins), U/3 "
        "(equal spins) and a periodic distance d.",
    )

    def validate(self, cfg: Config) -> None:
        """Cross-key checks: a moire system, K > 1 needs noise, hf needs spin polarization."""
        if not isinstance(cfg.system, MoireConfig):
            raise InputError("model.type = 'slater' needs electrons (system.type = 'moire')")
        if self.n_determinants > 1 and self.init_noise == 0.0:
            raise InputError(
                f"model.n_determinants = {self.n_determinants} with model.init_noise = 0: the "
                "determinants would start equal and stay equal; set model.init_noise > 0"
            )
        if self.init == "hf" and not cfg.system.spin_polarized:
            raise InputError("model.init = 'hf' needs system.spin_polarized = true "
                             "(the Hartree-Fock reference is spin-polarized only)")


@dataclass(frozen=True, kw_only=True)
class PsiformerConfig:
    """Psiformer: self-attention orbitals over periodic electron features, determinants (moire).

    phi^k_j(r_i; {r}) = a^k_j(h_i) chi^k_j(r_i), h from self-attention blocks over
    [sin 2 pi s, cos 2 pi s, spin], chi a plane-wave envelope; psi = exp(J) sum_k det[phi^k]
    (hpcvmc/models/psiformer.py).
    """

    type: str = option("psiformer", "Model type.")
    n_layers: int = option(2, "Self-attention blocks (published: 4).", positive=True)
    n_heads: int = option(4, "Attention heads H per block (published: 4).", positive=True)
    width: int = option(
        32, "Width d of the electron stream; head dimension d/H (published: 64).", positive=True
    )
    n_determinants: int = option(1, "Number of determinants K (published: 4).", positive=True)
    envelope: str = option(
        "plane_waves", "Orbital envelope: learnable supercell plane-wave orbitals (norm of Q at "
        "most g_max times that of g_1) multiplying the network output, or none (the published "
        "network).",
        choices=("plane_waves", "none"),
    )
    g_max: float = option(
        1.0, "Plane-wave cut-off of the envelope in units of the norm of g_1 (4 pi/sqrt3 per a_M).",
        positive=True,
    )
    init: str = option(
        "bands", "Initial envelope: lowest non-interacting orbitals or the lowest spin-polarized "
        "Hartree-Fock state (basis cut-off q_max = g_max).",
        choices=("bands", "hf"),
    )
    jastrow: bool = option(
        True, "Two-body Jastrow u(d) = c d/(1 + b d) with the 2D cusps (as model.type = 'slater').",
    )
    dtype: str = option(
        "float64", "Compute precision of the network (parameters, optimizer state, energies and "
        "the update stay float64).", choices=DTYPES,
    )

    def validate(self, cfg: Config) -> None:
        """Cross-key checks: moire system, d divisible by H, hf needs envelope and polarization."""
        if not isinstance(cfg.system, MoireConfig):
            raise InputError("model.type = 'psiformer' needs electrons (system.type = 'moire')")
        if self.width % self.n_heads:
            raise InputError(
                f"model.width = {self.width} is not divisible by model.n_heads = {self.n_heads}"
            )
        if self.init == "hf" and self.envelope != "plane_waves":
            raise InputError("model.init = 'hf' needs model.envelope = 'plane_waves' "
                             "(the Hartree-Fock orbitals live in the envelope)")
        if self.init == "hf" and not cfg.system.spin_polarized:
            raise InputError("model.init = 'hf' needs system.spin_polarized = true "
                             "(the Hartree-Fock reference is spin-polarized only)")


# ------------------------------------------------------------------------------------------------
# Samplers
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ExchangeSamplerConfig:
    """Metropolis with spin-exchange moves between nearest and next-nearest neighbours."""

    type: str = option("exchange", "Sampler type.")
    n_chains: int = option(64, "Markov chains in total (divided evenly over ranks).", positive=True)
    n_samples: int = option(
        1024, "Samples per step in total, over all chains (a multiple of n_chains).",
        positive=True,
    )
    sweeps: int = option(
        1, "Sweeps (n_sites proposals each) between two recorded samples (thinning).",
        positive=True,
    )
    burn_in: int = option(100, "Sweeps discarded before the first step.", minimum=0)
    discard: int = option(0, "Sweeps discarded at the start of every step.", minimum=0)

    def validate(self, cfg: Config) -> None:
        """Cross-key checks."""
        if self.n_samples % self.n_chains:
            raise InputError(
                f"sampler.n_samples = {self.n_samples} is not a multiple of "
                f"sampler.n_chains = {self.n_chains}"
            )
        if not isinstance(cfg.system, J1J2Config):
            raise InputError("sampler.type = 'exchange' needs a lattice system (system.type = 'j1j2')")

    @property
    def samples_per_chain(self) -> int:
        """Samples each chain records per step."""
        return self.n_samples // self.n_chains


@dataclass(frozen=True, kw_only=True)
class GaussianSamplerConfig:
    """Metropolis with Gaussian moves of electron positions on the supercell torus (moire)."""

    type: str = option("gaussian", "Sampler type.")
    n_chains: int = option(64, "Markov chains in total (divided evenly over ranks).", positive=True)
    n_samples: int = option(
        1024, "Samples per step in total, over all chains (a multiple of n_chains).",
        positive=True,
    )
    sweeps: int = option(
        10, "Sweeps between two recorded samples (thinning); a sweep is one all-electron move "
        "or N one-electron moves.", positive=True,
    )
    burn_in: int = option(
        200, "Sweeps discarded before the first step (blocks of 10 with width adaptation).",
        minimum=0,
    )
    discard: int = option(0, "Sweeps discarded at the start of every step.", minimum=0)
    move: str = option(
        "all", "Move all electrons at once, or one electron at a time.", choices=("all", "one")
    )
    width: float = option(0.2, "Initial move width (Gaussian standard deviation) in a_M.",
                          positive=True)
    target_acceptance: float = option(
        0.5, "Acceptance the per-chain widths adapt to (in burn-in and after every step).",
        positive=True,
    )

    def validate(self, cfg: Config) -> None:
        """Cross-key checks."""
        if self.n_samples % self.n_chains:
            raise InputError(
                f"sampler.n_samples = {self.n_samples} is not a multiple of "
                f"sampler.n_chains = {self.n_chains}"
            )
        if self.target_acceptance >= 1.0:
            raise InputError(
                f"sampler.target_acceptance = {self.target_acceptance} must be < 1"
            )
        if not isinstance(cfg.system, MoireConfig):
            raise InputError("sampler.type = 'gaussian' needs electrons (system.type = 'moire')")

    @property
    def samples_per_chain(self) -> int:
        """Samples each chain records per step."""
        return self.n_samples // self.n_chains


EXACT_SAMPLER_MAX_STATES = 2_000_000


@dataclass(frozen=True, kw_only=True)
class ExactSamplerConfig:
    """Full sum over the Sz = 0 sector, weights |psi|^2 (no Monte Carlo noise)."""

    type: str = option("exact", "Sampler type.")
    orbits: bool = option(
        False, "Sum over one configuration per orbit of the space group x spin flip, weighted by "
        "the orbit size (exact for a model projected with model.symmetrize = 'full'; 4 x 4: 107 "
        "configurations instead of 12,870)."
    )

    def validate(self, cfg: Config) -> None:
        """The sector must be small enough to enumerate; orbits need a G-invariant model."""
        if not isinstance(cfg.system, J1J2Config):
            raise InputError("sampler.type = 'exact' needs a lattice system (system.type = 'j1j2')")
        if self.orbits and not (isinstance(cfg.model, ViTConfig) and cfg.model.symmetrize == "full"):
            raise InputError(
                "sampler.orbits = true needs a wave function invariant under the space group x "
                "spin flip (model.type = 'vit' with model.symmetrize = 'full')"
            )
        n = cfg.system.n_sites
        size = math.comb(n, n // 2)
        if size > EXACT_SAMPLER_MAX_STATES:
            raise InputError(
                f"sampler.type = 'exact' cannot enumerate system.L = {cfg.system.L}: the Sz = 0 "
                f"sector has {size} states (limit {EXACT_SAMPLER_MAX_STATES})"
            )


# ------------------------------------------------------------------------------------------------
# Optimizer
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class MinSRConfig:
    """Natural gradient (minSR, or SR in parameter space when P < N_s)."""

    type: str = option("minsr", "Optimizer type.")
    learning_rate: float = option(0.01, "Initial learning rate.", positive=True)
    learning_rate_final: float | None = option(
        None, "Learning rate at the last step (decayed as `decay`); unset = constant.",
        positive=True,
    )
    diag_shift: float = option(1e-4, "Initial diagonal shift lambda.", minimum=0.0)
    diag_shift_final: float | None = option(
        None, "Diagonal shift at the last step (decayed as `decay`); unset = constant.",
        minimum=0.0,
    )
    decay: str = option(
        "exponential", "Shape of the decays to the *_final values.",
        choices=("exponential", "cosine", "linear"),
    )
    method: str = option(
        "auto", "Solve in sample space (minsr), parameter space (sr), or auto: sr when P < N_s.",
        choices=("auto", "minsr", "sr"),
    )
    momentum: float = option(0.0, "SPRING momentum mu in [0, 1) (0 = plain minSR).", minimum=0.0)
    max_update_norm: float = option(
        0.0, "Cap on the length of a parameter step, the Euclidean norm of learning rate x "
        "natural gradient in parameter space: a longer step is scaled down to it (0 = no cap); the "
        "history's update_scale shows where it acted.", minimum=0.0
    )
    chunk_size: int = option(
        128, "Samples per Jacobian chunk (bounds the peak memory of the backward passes).",
        positive=True
    )
    clip_local_energy: float = option(
        0.0, "For the update only, clip E_L to mean +- this many mean absolute deviations "
        "(real and imaginary parts; 0 = off). Reported energies are never clipped.", minimum=0.0
    )

    def validate(self, cfg: Config) -> None:
        """SPRING momentum in [0, 1)."""
        if self.momentum >= 1.0:
            raise InputError(f"optimizer.momentum = {self.momentum} must be < 1 (range [0, 1))")


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


SYSTEMS: dict[str, type] = {"j1j2": J1J2Config, "moire": MoireConfig}
MODELS: dict[str, type] = {
    "rbm": RBMConfig, "vit": ViTConfig, "slater": SlaterConfig, "psiformer": PsiformerConfig,
}
SAMPLERS: dict[str, type] = {
    "exchange": ExchangeSamplerConfig, "exact": ExactSamplerConfig,
    "gaussian": GaussianSamplerConfig,
}
OPTIMIZERS: dict[str, type] = {"minsr": MinSRConfig}

# section name -> registry of its types (or a single class for sections without `type`)
SECTIONS: dict[str, dict[str, type] | type] = {
    "system": SYSTEMS,
    "model": MODELS,
    "sampler": SAMPLERS,
    "optimizer": OPTIMIZERS,
    "run": RunConfig,
}
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
        keys (``option(numerical=True)``): a resume must match it."""
        physics = {}
        for name in PHYSICS_SECTIONS:
            section = getattr(self, name)
            numerical = {f.name for f in dataclasses.fields(section) if f.metadata.get("numerical")}
            physics[name] = {k: v for k, v in self.to_dict()[name].items() if k not in numerical}
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


def _build_section(name: str, raw: Mapping[str, Any]) -> Any:
    """Turn one TOML table into its dataclass, checking keys, types and bounds."""
    spec = SECTIONS[name]
    if isinstance(spec, dict):
        if "type" not in raw:
            raise InputError(f"{name}.type is missing (one of {', '.join(map(repr, spec))})")
        kind = raw["type"]
        if kind not in spec:
            raise InputError(
                f"{name}.type = {kind!r} is not one of {', '.join(map(repr, spec))}"
                + _did_you_mean(str(kind), list(spec))
            )
        cls = spec[kind]
    else:
        cls = spec
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{name}.{key}"
        if key not in fields:
            raise InputError(f"unknown key {path}" + _did_you_mean(key, list(fields)))
        value = _coerce(value, hints[key], path)
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


def from_tables(tables: Mapping[str, Mapping[str, Any]]) -> Config:
    """Build and validate a Config from parsed TOML tables.

    Raises:
        InputError: naming the key path of the first problem found.
    """
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
    for name in SECTIONS:
        validate: Callable[[Config], None] | None = getattr(sections[name], "validate", None)
        if validate is not None:
            validate(config)
    return config


def loads(text: str, overrides: list[str] | None = None, source: str = "<input>") -> Config:
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
    return from_tables(tables)


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read and validate an input file.

    Raises:
        InputError: a missing or unreadable file, bad TOML, or a bad key or value.
    """
    with _reading(path):
        return loads(_read_input(path), overrides, source=str(path))


INPUT_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("input_dir", default=None)
"""The folder of the input file being read (None: the working directory): where a
``module:Name`` key finds ``module.py`` when ``module`` is not on the Python path."""


@contextlib.contextmanager
def _reading(path: str | Path) -> Iterator[None]:
    """Set :data:`INPUT_DIR` to the folder of ``path`` while it is parsed and validated."""
    token = INPUT_DIR.set(Path(path).resolve().parent)
    try:
        yield
    finally:
        INPUT_DIR.reset(token)


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
    with _reading(path):
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
        return from_tables(tables).system
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


def input_reference() -> str:
    """Markdown tables of every section, type and key: type, default and meaning."""
    out: list[str] = []
    for name, spec in SECTIONS.items():
        classes = list(spec.items()) if isinstance(spec, dict) else [(None, spec)]
        for kind, cls in classes:
            title = f"[{name}]" + (f" type = \"{kind}\"" if kind else "")
            out += [f"#### `{title}`", "", (cls.__doc__ or "").strip().splitlines()[0], ""]
            out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                doc = f.metadata["doc"]
                if f.metadata["choices"]:
                    doc += " One of " + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + "."
                out.append(f"| `{f.name}` | {_type_name(hints[f.name])} | {_format_default(f)} | {doc} |")
            out.append("")
    return "\n".join(out)

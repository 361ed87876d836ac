"""Any user flax module as the wave function (``[model] type = "flax"``).

The input names the class, ``module = "module:Class"`` (``module`` on the Python path, or
``module.py`` next to the input file), and its constructor arguments, the ``kwargs`` table. The
module's ``__call__(x)`` maps configurations of shape (batch, *config_shape) to log psi of shape
(batch,), real or complex; the wrapper returns it as complex:

    log psi(x) = complex(user(x)),

so a real output is a positive wave function. The user's parameters sit under ``params["net"]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpcvmc import registry
from hpcvmc.registry import Component, register
from hpcvmc.config import REQUIRED, option
from hpcvmc.errors import InputError


def _module_class(spec: str) -> type[nn.Module]:
    """The flax module class that ``spec`` = "module:Class" names.

    Raises:
        InputError: naming ``model.module``: it cannot be loaded or is not a flax module class.
    """
    cls = registry.load_object(spec, "model.module")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise InputError(f"model.module = {spec!r} is not a flax.linen.Module class")
    return cls


@dataclass(frozen=True, kw_only=True)
class FlaxModelConfig:
    """A user flax module returning log psi of shape (batch,), real or complex."""

    type: str = option("flax", "Model type.")
    module: str = option(
        REQUIRED, "'module:Class' of a flax.linen.Module whose __call__(x) returns log psi of "
        "shape (batch,) (module on the Python path or module.py next to the input file)."
    )
    kwargs: dict[str, Any] | None = option(
        None, "Keyword arguments of the module's constructor."
    )

    requires: ClassVar[frozenset[str]] = frozenset()

    def validate(self, cfg: Any) -> None:
        """Load the class and construct it (errors name model.module or model.kwargs)."""
        user_module(self)


def user_module(cfg: FlaxModelConfig) -> nn.Module:
    """The user's module constructed with ``cfg.kwargs``.

    Raises:
        InputError: naming ``model.module`` (see :func:`_module_class`) or ``model.kwargs``
            (the constructor rejects them).
    """
    cls = _module_class(cfg.module)
    try:
        return cls(**(cfg.kwargs or {}))
    except TypeError as exc:
        raise InputError(f"model.kwargs = {json.dumps(cfg.kwargs or {})}: {exc}") from None


class FlaxModel(nn.Module):
    """Wraps a user module: complex log psi of shape (batch,).

    Attributes:
        net: the user's module.
    """

    net: nn.Module

    def __call__(self, x: jax.Array) -> jax.Array:
        """log psi of configurations x of shape (batch, *config_shape) -> (batch,) complex."""
        out = self.net(x)
        if out.shape != x.shape[:1]:
            raise ValueError(f"{type(self.net).__name__} returned log psi of shape {out.shape} "
                             f"for {x.shape[0]} configurations; expected ({x.shape[0]},)")
        return out.astype(jnp.complex128 if jax.config.jax_enable_x64 else jnp.complex64)


def build(cfg: FlaxModelConfig, system: Any) -> FlaxModel:
    """The wrapped user module of a validated ``[model] type = "flax"`` section.

    Raises:
        InputError: naming ``model.module`` when the module fails on a batch of two
            configurations of the system, its output does not have shape (2,), or a parameter
            is in single precision (with float64 enabled, as hpcvmc runs: the optimizer's
            updates would be rounded to float32).
    """
    model = FlaxModel(net=user_module(cfg))
    x = jnp.ones((2,) + tuple(system.config_shape))
    try:
        params = jax.eval_shape(lambda k: model.init(k, x), jax.random.PRNGKey(0))["params"]
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported in one line
        raise InputError(f"model.module = {cfg.module!r}: initializing it on configurations of "
                         f"shape {x.shape} failed: {type(exc).__name__}: {exc}") from None
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jax.config.jax_enable_x64 and jnp.finfo(leaf.dtype).bits < 64:
            name = "/".join(str(getattr(k, "key", k)) for k in path[1:])
            raise InputError(f"model.module = {cfg.module!r}: parameter {name} is {leaf.dtype}; "
                             "hpcvmc keeps parameters in double precision (pass "
                             "param_dtype=jnp.float64 to the module's layers)")
    return model


register(Component("model", "flax", FlaxModelConfig, build))

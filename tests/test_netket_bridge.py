"""The NetKet bridge: local energies against NetKet's connected elements, the spin convention, exchange
pairs, enumeration, Lanczos, and bad operator / module strings (exit-2 errors)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

nk = pytest.importorskip("netket")

from hpcvmc.config import InputError  # noqa: E402
from hpcvmc.registry import reading_input  # noqa: E402
from hpcvmc.models import flax_model  # noqa: E402
from hpcvmc.systems import netket_bridge  # noqa: E402
from hpcvmc.systems.netket_bridge import NetKetSystem, NetKetSystemConfig  # noqa: E402


class ComplexRBM(nn.Module):
    """A small RBM with complex log psi (the same module on both sides of the comparisons)."""

    alpha: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.normal(0.3)
        a, b = (nn.Dense(self.alpha * x.shape[-1], kernel_init=init, bias_init=init,
                         param_dtype=jnp.float64)(x) for _ in range(2))
        return jnp.sum(jnp.log(jnp.cosh(a + 1j * b)), axis=-1)


def tfim_chain(n: int = 10, h: float = 0.7) -> object:
    hilbert = nk.hilbert.Spin(0.5, n)
    return nk.operator.Ising(hilbert, nk.graph.Chain(n, pbc=True), h=h, J=1.0)


TRIANGULAR = nk.graph.Triangular([3, 4], pbc=True)


def heisenberg_triangular() -> object:
    hilbert = nk.hilbert.Spin(0.5, TRIANGULAR.n_nodes, total_sz=0)
    return nk.operator.Heisenberg(hilbert, TRIANGULAR, J=0.8)


def netket_local_energy(op: object, logpsi: object, x: np.ndarray) -> np.ndarray:
    """E_L(x) = sum_k H_k(x) psi(x'_k) / psi(x) in numpy, every connected element (diagonal and
    padding included) from NetKet's get_conn_padded, the network called once on all of them."""
    x_conn, mels = (np.asarray(a) for a in op.get_conn_padded(x))
    log_conn = np.asarray(logpsi(x_conn.reshape(-1, x.shape[1]))).reshape(mels.shape)
    return np.sum(mels * np.exp(log_conn - np.asarray(logpsi(x))[:, None]), axis=1)


@pytest.mark.parametrize("make_op, chunk", [(tfim_chain, 7), (heisenberg_triangular, 5),
                                            (heisenberg_triangular, 256)])
def test_local_energy_equals_netket(make_op, chunk) -> None:
    """Random configurations, a complex RBM; chunk 5 and 7 < 40 configurations exercise the
    blocks and the compacted network calls, 256 the single block."""
    op = make_op()
    system = NetKetSystem(op, chunk_size=chunk)
    model = ComplexRBM()
    x = np.asarray(op.hilbert.random_state(jax.random.PRNGKey(3), 40), dtype=np.float64)
    params = model.init(jax.random.PRNGKey(1), x)["params"]

    def logpsi(p: object, c: jax.Array) -> jax.Array:
        return model.apply({"params": p}, c)

    ours = jax.jit(lambda p, c: system.local_energy(logpsi, p, c))(params, jnp.asarray(x))
    reference = netket_local_energy(op, lambda c: logpsi(params, jnp.asarray(c)), x)
    assert np.abs(reference.imag).max() > 0.1  # a complex wave function: both parts tested
    np.testing.assert_allclose(np.asarray(ours), reference, rtol=1e-12, atol=1e-12)


def test_spin_convention_up_is_plus_one() -> None:
    """sum_i sigma^z_i has local energy sum(x): hpcvmc's +1 is NetKet's spin up."""
    hilbert = nk.hilbert.Spin(0.5, 6)
    op = sum(nk.operator.spin.sigmaz(hilbert, i) for i in range(6))
    x = jnp.array([[1.0, 1, 1, -1, 1, -1], [-1.0, -1, -1, -1, -1, 1]])
    e = NetKetSystem(op).local_energy(lambda p, c: jnp.zeros(c.shape[0], complex), None, x)
    np.testing.assert_allclose(np.asarray(e), [2.0, -4.0])


def test_exchange_pairs_are_the_bonds_or_all_pairs() -> None:
    op = heisenberg_triangular()
    edges = {tuple(sorted(e)) for e in TRIANGULAR.edges()}
    assert {tuple(p) for p in NetKetSystem(op).exchange_pairs()} == edges
    pairs = NetKetSystem(tfim_chain(5)).exchange_pairs()  # single flips only: every pair
    assert len(pairs) == 10 and all(i < j for i, j in pairs)


def test_all_configurations_and_capabilities(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "bridge_ops.py").write_text(textwrap.dedent("""
        import netket as nk

        def heisenberg(n, total_sz=None):
            graph = nk.graph.Chain(n, pbc=True)
            return nk.operator.Heisenberg(nk.hilbert.Spin(0.5, n, total_sz=total_sz), graph)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    fixed = NetKetSystemConfig(operator="bridge_ops:heisenberg", kwargs={"n": 8, "total_sz": 0})
    free = NetKetSystemConfig(operator="bridge_ops:heisenberg", kwargs={"n": 8})
    assert fixed.capabilities == {"spins", "fixed_magnetization", "enumerable"}
    assert free.capabilities == {"spins", "enumerable"}
    states = netket_bridge.build(fixed).all_configurations()
    assert states.shape == (70, 8) and np.all(states.sum(axis=1) == 0)
    assert len({tuple(s) for s in states}) == 70
    # the 8-site Heisenberg ring: E0 = -3.651093409 J with S = sigma/2 (Bethe ansatz), NetKet
    # uses Pauli matrices (4 x)
    energy, source = netket_bridge.exact_energy(fixed)
    assert energy == pytest.approx(4 * -3.651093409, abs=1e-8) and "total_sz = 0" in source


def test_operator_file_next_to_input(tmp_path: Path) -> None:
    (tmp_path / "bridge_local_op.py").write_text(
        "import netket as nk\n\ndef op(n):\n"
        "    return nk.operator.Ising(nk.hilbert.Spin(0.5, n), nk.graph.Chain(n), h=1.0)\n")
    with reading_input(tmp_path):
        system = netket_bridge.build(NetKetSystemConfig(operator="bridge_local_op:op",
                                                        kwargs={"n": 5}))
    assert system.n_sites == 5 and system.config_shape == (5,)


@pytest.mark.parametrize("spec, kwargs, message", [
    ("no_such_module_xyz:f", None, "system.operator = 'no_such_module_xyz:f': no module"),
    ("json", None, "expected 'module:Name'"),
    ("json:no_such_function", None, "has no 'no_such_function'"),
    ("json:dumps", None, "calling it failed: TypeError"),
    ("json:dumps", {"obj": 1}, "returned str, not a NetKet discrete operator"),
])
def test_bad_operator_is_an_input_error(spec: str, kwargs: dict | None, message: str) -> None:
    with pytest.raises(InputError, match="^system.operator") as err:
        NetKetSystemConfig(operator=spec, kwargs=kwargs).validate(None)
    assert message in str(err.value)


def test_non_spin_half_space_is_an_input_error(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "bridge_spin1.py").write_text(
        "import netket as nk\n\ndef op():\n"
        "    return nk.operator.spin.sigmax(nk.hilbert.Spin(1.0, 4), 0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InputError, match="is not nk.hilbert.Spin\\(0.5, N\\)"):
        NetKetSystemConfig(operator="bridge_spin1:op").validate(None)


class RealNet(nn.Module):
    """A real log psi (a positive wave function)."""

    width: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.sum(nn.Dense(self.width, param_dtype=jnp.float64)(x), axis=-1)


def test_flax_wrapper_returns_the_user_modules_log_psi() -> None:
    cfg = flax_model.FlaxModelConfig(module=f"{__name__}:RealNet", kwargs={"width": 5})
    system = NetKetSystem(tfim_chain(6))
    model = flax_model.build(cfg, system)
    x = jnp.asarray(np.random.default_rng(0).choice([-1.0, 1.0], size=(7, 6)))
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    out = model.apply({"params": params}, x)
    user = RealNet(width=5).apply({"params": params["net"]}, x)
    assert out.dtype == jnp.complex128 and out.shape == (7,)
    np.testing.assert_array_equal(np.asarray(out.real), np.asarray(user))
    np.testing.assert_array_equal(np.asarray(out.imag), 0.0)


class SinglePrecision(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.sum(nn.Dense(2)(x), axis=-1)  # flax's default param_dtype: float32


class WrongShape(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(2, param_dtype=jnp.float64)(x)


@pytest.mark.parametrize("module, kwargs, message", [
    ("no_such_module_xyz:Net", None, "model.module = 'no_such_module_xyz:Net': no module"),
    ("json:JSONDecoder", None, "model.module = 'json:JSONDecoder' is not a flax.linen.Module"),
    (f"{__name__}:RealNet", {"depth": 2}, "model.kwargs = {\"depth\": 2}: "),
    (f"{__name__}:WrongShape", None, "expected (2,)"),
    (f"{__name__}:SinglePrecision", None, "parameter Dense_0/bias is float32"),
])
def test_bad_flax_module_is_an_input_error(module: str, kwargs: dict | None, message: str) -> None:
    cfg = flax_model.FlaxModelConfig(module=module, kwargs=kwargs)
    with pytest.raises(InputError) as err:
        flax_model.build(cfg, NetKetSystem(tfim_chain(4)))
    assert message in str(err.value)

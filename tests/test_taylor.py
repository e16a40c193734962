"""Taylor-mode derivatives (with the jet workaround) against nested jax.jvp."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stochbp
from stochbp._src import series, taylor


def nested_jvp(f, z, j, n):
    e = jnp.zeros_like(z).at[j].set(1.0)
    g = f
    for _ in range(n):
        g = (lambda h: (lambda x: jax.jvp(h, (x,), (e,))[1]))(g)
    return g(z)


def reference(f, z, order):
    return np.array([[nested_jvp(f, z, j, n) for j in range(z.shape[0])]
                     for n in range(1, order + 1)])


def scan_cond(z):
    c = jax.lax.cond(z[0] > 0, jnp.sin, jnp.cos, z[1])
    s, ys = jax.lax.scan(lambda c, x: (c * jnp.tanh(x) + x ** 2, c * x), 1.0, z)
    return c + s + jnp.sum(ys)


FUNCTIONS = {
    "log_sigmoid": lambda z: jnp.sum(jax.nn.log_sigmoid(z * jnp.arange(1.0, 4.0))),
    "softplus": lambda z: jax.nn.softplus(z[0] * z[1] - z[2]),
    "relu": lambda z: jnp.sum(jax.nn.relu(z) * z ** 2),
    "logaddexp": lambda z: jnp.logaddexp(z[0], 2 * z[1] + z[2]),
    "logsumexp": lambda z: jax.nn.logsumexp(z * z[0]),
    "log_softmax": lambda z: jax.nn.log_softmax(z)[1],
    "gelu_silu": lambda z: jnp.sum(jax.nn.silu(z) + jax.nn.gelu(z)),
    "lgamma_digamma": lambda z: jnp.sum(jax.scipy.special.gammaln(z + 2.0)
                                        + jax.scipy.special.digamma(z + 3.0)),
    "scan_cond": scan_cond,
    "nested_jit": jax.jit(lambda z: jnp.sum(jax.jit(jax.nn.sigmoid)(z) ** 3)),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_directional_derivatives_match_nested_jvp(name):
    f = FUNCTIONS[name]
    z = jnp.array([0.3, -0.7, 1.1])
    got = taylor.directional_derivatives(f, z, 5)
    np.testing.assert_allclose(got, reference(f, z, 5), rtol=1e-9, atol=1e-10)


def test_plain_jet_really_fails_on_custom_jvp():
    """Guards the reason the workaround exists; if JAX fixes it, this starts failing
    and the workaround can be reconsidered."""
    from jax.experimental import jet
    f = lambda x: jnp.sum(jax.nn.log_sigmoid(x))  # noqa: E731
    with pytest.raises(Exception):
        jet.jet(f, (jnp.ones(2),), ([jnp.ones(2), jnp.zeros(2)],))


def test_while_loop_is_refused_with_a_clear_message():
    f = lambda z: jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2),  # noqa
                                     (0, z[0]))[1]
    with pytest.raises(NotImplementedError, match="while_loop"):
        taylor.directional_derivatives(f, jnp.array([1.0, 2.0]), 2)


def test_under_jit_and_vmap():
    f = FUNCTIONS["log_sigmoid"]
    zs = jnp.array([[0.3, -0.7, 1.1], [1.0, 0.2, -2.0]])
    got = jax.jit(jax.vmap(lambda z: taylor.directional_derivatives(f, z, 3)))(zs)
    for i in range(2):
        np.testing.assert_allclose(got[i], reference(f, zs[i], 3), rtol=1e-9)


@pytest.mark.parametrize("elementwise", [True, False])
def test_linear_composite_matches_general_path(elementwise):
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    A = jax.random.normal(k[0], (7, 4))
    b = jax.random.normal(k[1], (7,))
    zs = jax.random.normal(k[2], (5, 4))
    if elementwise:
        f = stochbp.linear(jax.nn.log_sigmoid, A, b, elementwise=True)
        plain = lambda z: jnp.sum(jax.nn.log_sigmoid(A @ z + b))  # noqa: E731
    else:
        g = lambda u: jnp.sum(jnp.tanh(u)) * jnp.sum(u ** 2) / 10  # noqa: E731
        f = stochbp.linear(g, A, b)
        plain = lambda z: g(A @ z + b)  # noqa: E731
    np.testing.assert_allclose(f(zs[0]), plain(zs[0]), rtol=1e-12)
    fast = series.mean_derivatives(f, zs, 6)
    slow = series.mean_derivatives(plain, zs, 6)
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)


def test_cgf_coefficients_by_jet_match_closed_forms():
    """Theorem 1's coefficients from Taylor mode on each family's CGF equal the
    closed forms the families use (Eqs. 15, 19, 20)."""
    import numpyro.distributions as nd
    from stochbp._src.families import family_of
    dists = [nd.Normal(jnp.array([0.3, -1.0]), jnp.array([0.5, 2.0])),
             nd.Laplace(jnp.array([0.3, -1.0]), jnp.array([0.5, 0.2])),
             nd.Gamma(jnp.array([2.0, 0.5]), jnp.array([1.5, 4.0])),
             nd.Exponential(jnp.array([2.0, 0.5])),
             nd.Chi2(jnp.array([3.0, 1.0]))]
    for d in dists:
        fam = family_of(d)
        order = 2 if fam.name == "Normal" else 8
        by_jet = series.coefficients_from_cgf(lambda t: jnp.broadcast_to(fam.cgf(d, t),
                                                                         d.batch_shape),
                                              jnp.zeros(()), order)
        np.testing.assert_allclose(by_jet, fam.coefficients(d, order), rtol=1e-10,
                                   err_msg=fam.name)

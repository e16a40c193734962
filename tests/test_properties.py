"""Property-based checks of identities that hold exactly, for every input."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
from hypothesis import given, settings
from hypothesis import strategies as st

import stochbp
from stochbp._src import series

SETTINGS = settings(max_examples=8, deadline=None)
floats = st.floats(-2.0, 2.0, allow_nan=False)


# One compiled program serves every example: m hidden units and d inputs are embedded
# in fixed (M_MAX, D_MAX) shapes by zeroing the other rows and columns of A (a zero row
# adds a z-independent term, a zero column a coordinate f does not depend on), and all
# orders 1..ORDER_MAX come out of one Taylor pass.
M_MAX, D_MAX, ORDER_MAX = 6, 5, 6


@jax.jit
def linear_paths(A, b, zs):
    fast = stochbp.linear(jax.nn.softplus, A, b, elementwise=True)
    slow = lambda z: jnp.sum(jax.nn.softplus(A @ z + b))  # noqa: E731
    return (series.mean_derivatives(fast, zs, ORDER_MAX),
            series.mean_derivatives(slow, zs, ORDER_MAX))


@SETTINGS
@given(m=st.integers(1, M_MAX), d=st.integers(1, D_MAX), seed=st.integers(0, 2 ** 16))
def test_linear_fast_path_equals_taylor_of_f(m, d, seed):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    rows, cols = jnp.arange(M_MAX) < m, jnp.arange(D_MAX) < d
    A = jax.random.normal(k1, (M_MAX, D_MAX)) * rows[:, None] * cols[None, :]
    b = jax.random.normal(k2, (M_MAX,)) * rows
    zs = jax.random.normal(k3, (3, D_MAX))
    fast, slow = linear_paths(A, b, zs)
    np.testing.assert_allclose(fast, slow, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(fast[:, d:], 0.0)  # the unused coordinates
    assert np.all(np.abs(fast[:2, :d]).max(axis=1) > 0)


@jax.jit
def normal_scale_gradient(loc, scale, q, lin, key):
    f = lambda z: jnp.sum(0.5 * q * z ** 2 + lin * z)  # noqa: E731
    return jax.grad(lambda s: stochbp.expectation(f, nd.Normal(loc, s), key,
                                                  estimator=stochbp.fourier()))(scale)


@SETTINGS
@given(loc=floats, scale=st.floats(0.1, 3.0), q=st.floats(0.1, 3.0), lin=floats,
       seed=st.integers(0, 2 ** 16))
def test_normal_scale_gradient_exact_for_quadratics(loc, scale, q, lin, seed):
    """Eq. 15: for f = q z^2 / 2 + lin z the scale term is q * sigma, for every key."""
    g = normal_scale_gradient(loc, scale, q, lin, jax.random.PRNGKey(seed))
    np.testing.assert_allclose(g, q * scale, rtol=1e-10)


@jax.jit
def single_bernoulli_gradient(p, table, key):
    f = lambda z: table[z[0]]  # noqa: E731
    return jax.grad(lambda p: stochbp.expectation(f, nd.Bernoulli(probs=p), key,
                                                  estimator=stochbp.fourier()))(p)


@SETTINGS
@given(p=st.floats(0.01, 0.99), f0=floats, f1=floats, seed=st.integers(0, 2 ** 16))
def test_single_bernoulli_rule_is_exact(p, f0, f1, seed):
    g = single_bernoulli_gradient(jnp.array([p]), jnp.array([f0, f1]),
                                  jax.random.PRNGKey(seed))
    np.testing.assert_allclose(g, [f1 - f0], rtol=1e-12, atol=1e-12)


GAMMA_ORDER = 8


@jax.jit
def gamma_coefficient_jacobians(k, rate):
    from stochbp._src.families import family_of
    fam = family_of(nd.Gamma(k, rate))
    dk = jax.jacobian(lambda k: fam.coefficients(nd.Gamma(k, rate), GAMMA_ORDER))(k)
    dmu = jax.jacobian(lambda mu: fam.coefficients(nd.Gamma(k, 1.0 / mu), GAMMA_ORDER))(
        1.0 / rate)
    return dk, dmu


@SETTINGS
@given(k=st.floats(0.3, 5.0), rate=st.floats(0.3, 5.0))
def test_gamma_coefficients_are_eq20(k, rate):
    """d c_n / dk = mu^n / n and d c_n / dmu = k mu^(n-1) (Eq. 20's bracket times mu^n),
    for every n <= 8 (one compiled program for all examples)."""
    mu = 1.0 / rate
    dk, dmu = gamma_coefficient_jacobians(k, rate)
    n = np.arange(1, GAMMA_ORDER + 1)
    np.testing.assert_allclose(dk, mu ** n / n, rtol=1e-10)
    np.testing.assert_allclose(dmu, k * mu ** (n - 1), rtol=1e-10)

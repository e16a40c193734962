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


@SETTINGS
@given(m=st.integers(1, 6), d=st.integers(1, 5), order=st.integers(1, 6),
       seed=st.integers(0, 2 ** 16))
def test_linear_fast_path_equals_taylor_of_f(m, d, order, seed):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    A = jax.random.normal(k1, (m, d))
    b = jax.random.normal(k2, (m,))
    zs = jax.random.normal(k3, (3, d))
    fast = stochbp.linear(jax.nn.softplus, A, b, elementwise=True)
    slow = lambda z: jnp.sum(jax.nn.softplus(A @ z + b))  # noqa: E731
    np.testing.assert_allclose(series.mean_derivatives(fast, zs, order),
                               series.mean_derivatives(slow, zs, order),
                               rtol=1e-8, atol=1e-10)


@SETTINGS
@given(loc=floats, scale=st.floats(0.1, 3.0), q=st.floats(0.1, 3.0), lin=floats,
       seed=st.integers(0, 2 ** 16))
def test_normal_scale_gradient_exact_for_quadratics(loc, scale, q, lin, seed):
    """Eq. 15: for f = q z^2 / 2 + lin z the scale term is q * sigma, for every key."""
    f = lambda z: jnp.sum(0.5 * q * z ** 2 + lin * z)  # noqa: E731
    g = jax.grad(lambda s: stochbp.expectation(f, nd.Normal(loc, s), jax.random.PRNGKey(seed),
                                               estimator=stochbp.fourier()))(scale)
    np.testing.assert_allclose(g, q * scale, rtol=1e-10)


@SETTINGS
@given(p=st.floats(0.01, 0.99), f0=floats, f1=floats, seed=st.integers(0, 2 ** 16))
def test_single_bernoulli_rule_is_exact(p, f0, f1, seed):
    table = jnp.array([f0, f1])
    f = lambda z: table[z[0]]  # noqa: E731
    g = jax.grad(lambda p: stochbp.expectation(f, nd.Bernoulli(probs=p), jax.random.PRNGKey(seed),
                                               estimator=stochbp.fourier()))(jnp.array([p]))
    np.testing.assert_allclose(g, [f1 - f0], rtol=1e-12, atol=1e-12)


@SETTINGS
@given(k=st.floats(0.3, 5.0), rate=st.floats(0.3, 5.0), order=st.integers(1, 8))
def test_gamma_coefficients_are_eq20(k, rate, order):
    """d c_n / dk = mu^n / n and d c_n / dmu = k mu^(n-1) (Eq. 20's bracket times mu^n)."""
    from stochbp._src.families import family_of
    mu = 1.0 / rate
    fam = family_of(nd.Gamma(k, rate))
    dk = jax.jacobian(lambda k: fam.coefficients(nd.Gamma(k, rate), order))(k)
    dmu = jax.jacobian(lambda mu: fam.coefficients(nd.Gamma(k, 1.0 / mu), order))(mu)
    n = np.arange(1, order + 1)
    np.testing.assert_allclose(dk, mu ** n / n, rtol=1e-10)
    np.testing.assert_allclose(dmu, k * mu ** (n - 1), rtol=1e-10)

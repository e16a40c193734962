"""The general Theorem 1 rule with a user-supplied cumulant generating function."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest

import stochbp
from helpers import assert_unbiased

EULER = 0.5772156649015329


def gumbel_cgf(d, t):
    # log E[exp(t z)] = mu t + lgamma(1 - beta t): needs the lgamma Taylor rule.
    return d.loc * t + jax.scipy.special.gammaln(1 - d.scale * t)


def test_user_cgf_gumbel_square(key):
    theta = {"loc": jnp.array([0.2, -1.0]), "scale": jnp.array([0.5, 1.3])}
    make = lambda t: nd.Gumbel(t["loc"], t["scale"])  # noqa: E731

    def exact(t):
        mean = t["loc"] + EULER * t["scale"]
        return jnp.sum((mean - 0.3) ** 2 + (jnp.pi * t["scale"]) ** 2 / 6)
    f = lambda z: jnp.sum((z - 0.3) ** 2)  # noqa: E731
    assert_unbiased(f, make, theta, exact, stochbp.fourier(order=2, cgf=gumbel_cgf), key)


def test_user_cgf_reproduces_builtin_gamma_rule(key):
    """Theorem 1 by Taylor mode on -k log(1 - t / rate) gives Eq. 20 sample for sample."""
    d = lambda t: nd.Gamma(t[0], t[1])  # noqa: E731
    theta = (jnp.array([2.0, 0.7]), jnp.array([1.5, 3.0]))
    user = stochbp.fourier(order=5, cgf=lambda d, t: -d.concentration * jnp.log1p(-t / d.rate))
    f = lambda z: jnp.sum(jnp.exp(-0.4 * z) + z ** 3)  # noqa: E731
    for est_a, est_b in [(user, stochbp.fourier(order=5))]:
        ga = jax.grad(lambda t: stochbp.expectation(f, d(t), key, estimator=est_a,
                                                    num_samples=7))(theta)
        gb = jax.grad(lambda t: stochbp.expectation(f, d(t), key, estimator=est_b,
                                                    num_samples=7))(theta)
        for a, b in zip(ga, gb):
            np.testing.assert_allclose(a, b, rtol=1e-10)


def test_user_cgf_requires_order():
    with pytest.raises(ValueError, match="order"):
        stochbp.expectation(jnp.sum, nd.Gumbel(0.0, 1.0), jax.random.PRNGKey(0),
                            estimator=stochbp.fourier(cgf=gumbel_cgf))

"""The statistical tests must be able to fail: break a rule on purpose and check that
the unbiasedness check catches it."""
import jax.numpy as jnp
import numpyro.distributions as nd
import pytest

import stochbp
from stochbp._src.families import gamma, normal


def _check(make, theta, f, exact, est, key):
    return stochbp.diagnostics.check_unbiased(f, make, theta, key, estimator=est,
                                              reference=exact, num_samples=4,
                                              num_draws=2000, batch_size=None)


def test_broken_gamma_rule_is_caught(key, monkeypatch):
    theta = {"k": jnp.array([2.0, 0.7]), "rate": jnp.array([1.5, 3.0])}
    make = lambda t: nd.Gamma(t["k"], t["rate"])  # noqa: E731
    f = lambda z: jnp.sum((z - 0.3) ** 2)  # noqa: E731
    exact = lambda t: jnp.sum((t["k"] / t["rate"] - 0.3) ** 2 + t["k"] / t["rate"] ** 2)  # noqa
    assert _check(make, theta, f, exact, stochbp.fourier(order=2), key).passed
    # Drop the 1/n of Eq. 20: c_n = k mu^n instead of k mu^n / n, in the log-space
    # coefficients the rule uses (l_n = log k + n log mu) ...
    original = gamma.GammaFamily.log_coefficients

    def no_one_over_n(self, d, order):
        logs, signs = original(self, d, order)
        n = jnp.arange(2, order + 1).reshape((-1,) + (1,) * len(d.batch_shape))
        return logs + jnp.log(n), signs
    monkeypatch.setattr(gamma.GammaFamily, "log_coefficients", no_one_over_n)
    assert not _check(make, theta, f, exact, stochbp.fourier(order=2), key).passed
    # ... and in the plain coefficients (used when a family gives no log form)
    monkeypatch.setattr(gamma.GammaFamily, "log_coefficients", lambda self, d, order: None)
    assert _check(make, theta, f, exact, stochbp.fourier(order=2), key).passed
    monkeypatch.setattr(gamma, "gamma_coefficients", lambda k, mu, order, shape: jnp.stack(
        [jnp.broadcast_to(k * mu ** n, shape) for n in range(1, order + 1)]))
    assert not _check(make, theta, f, exact, stochbp.fourier(order=2), key).passed


def test_wrong_reference_is_caught(key, monkeypatch):
    theta = {"loc": jnp.array([0.5]), "scale": jnp.array([1.0])}
    make = lambda t: nd.Normal(t["loc"], t["scale"])  # noqa: E731
    f = lambda z: jnp.sum(jnp.cos(z))  # noqa: E731
    good = lambda t: jnp.sum(jnp.cos(t["loc"]) * jnp.exp(-t["scale"] ** 2 / 2))  # noqa: E731
    bad = lambda t: jnp.sum(jnp.cos(t["loc"]) * jnp.exp(-t["scale"] ** 2 / 2.2))  # noqa: E731
    for est in (stochbp.fourier(), stochbp.pathwise(), stochbp.score_function()):
        assert _check(make, theta, f, good, est, key).passed, est.name
    # A 10% error in the scale's effect is far beyond 4 standard errors for the
    # low-variance estimators.
    assert not _check(make, theta, f, bad, stochbp.fourier(), key).passed
    assert not _check(make, theta, f, bad, stochbp.pathwise(), key).passed
    # Dropping the Hessian term of Eq. 15 must be caught too.
    monkeypatch.setattr(normal.NormalFamily, "coefficients",
                        lambda self, d, order: jnp.stack([jnp.broadcast_to(d.loc, d.batch_shape),
                                                          jnp.zeros(d.batch_shape)])[:order])
    assert not _check(make, theta, f, good, stochbp.fourier(), key).passed

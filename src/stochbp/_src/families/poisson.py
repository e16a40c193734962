"""Poisson(rate): a discrete family with unbounded support (values 0, 1, 2, ...).

There is no derivative of f at an integer and no finite logit vector, so the Fourier,
pathwise and logit-space rules do not apply; the score function does (numpyro's
log_prob), and so does the measure-valued rule. Writing p(n; lam) = lam^n e^-lam / n!,

    d p(n; lam) / d lam = p(n - 1; lam) - p(n; lam),

i.e. the derivative of the law of N is the law of N + 1 minus the law of N (constant
c = 1), so d/d lam E[f(N)] = E[f(N + 1)] - E[f(N)]: a finite difference of f, exact in
expectation.
"""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd

from stochbp._src import checks
from stochbp._src.families.base import Family, register


class PoissonFamily(Family):
    name = "Poisson"
    types = (nd.Poisson,)
    discrete = True
    has_fourier = False

    def check(self, d):
        checks.check_values("Poisson", "rate", d.rate,
                            lambda v: np.isfinite(v) & (v >= 0), "non-negative and finite")

    def weak_derivatives(self, d, key, num_samples, coupled):
        """x+ = N + 1 and x- = N', N and N' Poisson(lam); coupled: N' = N (the two parts
        then differ by exactly one event, the lowest-variance coupling)."""
        rate = jnp.broadcast_to(d.rate, d.batch_shape)
        rate0 = jax.lax.stop_gradient(rate)
        shape = (num_samples,) + tuple(d.batch_shape)
        k_plus, k_minus = jax.random.split(key)
        n_plus = jax.random.poisson(k_plus, rate0, shape)
        n_minus = n_plus if coupled else jax.random.poisson(k_minus, rate0, shape)
        return [(rate, jnp.ones_like(rate0), n_plus + 1, n_minus)]


register(PoissonFamily())

"""Dirac delta at a(theta): Eq. 16.

log phi(w) = i a^T w, so the only coefficient is c_1 = a and
    grad E[f] = (d a / d theta)^T grad f(a),
which is ordinary backpropagation: the rule is exact and uses a single evaluation
whatever ``num_samples`` is.
"""
import jax
import jax.numpy as jnp
import numpyro.distributions as nd
from jax import lax

from stochbp._src import checks, series
from stochbp._src.families.base import Family, register


class DeltaFamily(Family):
    name = "Delta"
    types = (nd.Delta,)
    reparameterized = True
    has_density = False  # no density w.r.t. a parameter-free measure: no score

    def check(self, d):
        checks.finite("Delta", "v", d.v)

    def fourier(self, f, d, key, num_samples, order):
        a = d.v
        a0 = lax.stop_gradient(a)
        return f(a0) + series.zero_valued(a, jax.grad(f)(a0))

    def fourier_derivative_order(self, order):
        return 1  # grad f at a(theta) only

    def cgf(self, d, t):
        return d.v * t

    def pathwise_sample(self, d, key, num_samples):
        return jnp.broadcast_to(d.v, (num_samples,) + jnp.shape(d.v))


register(DeltaFamily())

"""Laplace(mu, b): Eq. 19.

log phi(w) = i mu w - log(1 + b^2 w^2); expanding -log(1 - b^2 t^2) gives the CGF
coefficients c_1 = mu, c_{2m} = b^{2m} / m and zero odd terms beyond the first, so
    grad E[f] = grad mu E[f'] + sum_{m>=1} grad(b^{2m}) / m * E[f^{(2m)}].
``order`` is the highest derivative used: order = 2N keeps N terms of Eq. 19's sum.
The series converges when f is entire with derivatives growing more slowly than
b^(-n) (polynomials, cos, exp(eps z) with |eps| < 1/b). For a log-sigmoid likelihood it
is only asymptotic: the terms shrink for a while (longer when b |x_ij| is well below pi)
and then grow factorially, so the truncated rule is biased and a moderate order is best;
docs/series_bias.md measures this.
"""
import jax.numpy as jnp
import numpyro.distributions as nd

from stochbp._src import checks
from stochbp._src.families.base import register
from stochbp._src.families.coordinate import CoordinateFamily, stack_orders


class LaplaceFamily(CoordinateFamily):
    name = "Laplace"
    types = (nd.Laplace,)
    series = True
    reparameterized = True

    def check(self, d):
        checks.finite("Laplace", "loc", d.loc)
        checks.positive("Laplace", "scale", d.scale)

    def coefficients(self, d, order):
        b2 = d.scale ** 2
        terms = []
        for n in range(1, order + 1):
            if n == 1:
                terms.append(d.loc)
            elif n % 2 == 0:
                terms.append(b2 ** (n // 2) / (n // 2))
            else:
                terms.append(jnp.zeros_like(b2))
        return stack_orders(terms, d.batch_shape)

    def log_coefficients(self, d, order):
        """l_{2m} = 2m log b - log m; the odd terms beyond the first are absent."""
        n = jnp.arange(2, order + 1).reshape((-1,) + (1,) * len(d.batch_shape))
        even = (n % 2 == 0)
        logs = jnp.where(even, n * jnp.log(d.scale) - jnp.log(jnp.maximum(n // 2, 1)), 0.0)
        shape = (order - 1,) + tuple(d.batch_shape)
        return jnp.broadcast_to(logs, shape), jnp.broadcast_to(even, shape).astype(logs.dtype)

    def cgf(self, d, t):
        return d.loc * t - jnp.log1p(-(d.scale * t) ** 2)

    def cgf_domain_check(self, d, t):
        checks.check_values("fourier_exponential()", "epsilon",
                            jnp.abs(t) * d.scale, lambda v: v < 1,
                            "smaller than 1/scale in magnitude for Laplace (its CGF is "
                            "finite only for |t| < 1/b)")

    def cgf_in_domain(self, d, t):
        return jnp.abs(t) * d.scale < 1


register(LaplaceFamily())

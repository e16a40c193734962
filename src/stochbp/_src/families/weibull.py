"""Weibull(scale lam, concentration k): x = lam y^(1/k) with y ~ Exponential(1).

Density p(x) = (k / lam) (x / lam)^(k-1) exp(-(x / lam)^k), CDF 1 - exp(-(x / lam)^k).
Pathwise: the inverse CDF, x = lam (-log(1 - u))^(1/k), u uniform, differentiable in
both parameters. No closed-form cumulant generating function, so no Fourier rule.

Weak derivative with respect to the scale (for ``measure_valued()``): with
y = (x / lam)^k, d log p / d lam = (k / lam) (y - 1). The map x = lam y^(1/k) carries a
Gamma(2, 1) variable y to a law with density y p(x), so

    d p / d lam = (k / lam) [q(x) - p(x)],   q = law of lam Y^(1/k), Y ~ Gamma(2, 1).

The shape has d log p / dk = 1/k + (1 - y) log(x / lam), with no known decomposition
into two samplable laws; ``measure_valued()`` estimates its gradient with that score.
"""
import jax
import jax.numpy as jnp
import numpyro.distributions as nd

from stochbp._src import checks
from stochbp._src.families.base import Family, register


class WeibullFamily(Family):
    name = "Weibull"
    types = (nd.Weibull,)
    reparameterized = True
    has_fourier = False

    def check(self, d):
        checks.positive("Weibull", "scale", d.scale)
        checks.positive("Weibull", "concentration", d.concentration)

    def pathwise_sample(self, d, key, num_samples):
        """x = lam (-log1p(-u))^(1/k): the inverse CDF at a uniform u."""
        u = jax.random.uniform(key, (num_samples,) + tuple(d.batch_shape),
                               jnp.result_type(d.scale, d.concentration))
        return d.scale * (-jnp.log1p(-u)) ** (1.0 / d.concentration)

    def weak_derivatives(self, d, key, num_samples, coupled):
        """Scale: c = k / lam, x+ = lam (E1 + E2)^(1/k), x- = lam E3^(1/k), E_i
        Exponential(1); coupled: E3 = E1 (so x+ >= x- always)."""
        lam = jnp.broadcast_to(d.scale, d.batch_shape)
        lam0 = jax.lax.stop_gradient(lam)
        k0 = jax.lax.stop_gradient(jnp.broadcast_to(d.concentration, d.batch_shape))
        shape = (num_samples,) + tuple(d.batch_shape)
        e = jax.random.exponential(key, (3,) + shape, lam0.dtype)
        e_minus = e[0] if coupled else e[2]
        return [(lam, k0 / lam0, lam0 * (e[0] + e[1]) ** (1.0 / k0),
                 lam0 * e_minus ** (1.0 / k0))]

    def weak_derivative_scores(self, d, z):
        """The shape: 1/k + (1 - (z / lam)^k) log(z / lam)."""
        k = jnp.broadcast_to(d.concentration, d.batch_shape)
        k0, lam0 = jax.lax.stop_gradient(k), jax.lax.stop_gradient(d.scale)
        log_r = jnp.log(z / lam0)
        return [(k, 1.0 / k0 + (1.0 - jnp.exp(k0 * log_r)) * log_r)]


register(WeibullFamily())

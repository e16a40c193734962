"""Normal (independent coordinates): Eq. 15 with a diagonal covariance.

log phi(w) = i mu w - sigma^2 w^2 / 2, so the CGF coefficients are c_1 = mu and
c_2 = sigma^2 / 2 and the rule is
    grad E[f] = grad mu * E[f'(z)] + grad(sigma^2) / 2 * E[f''(z)]   (Bonnet / Price),
exact with two derivatives of f.
"""
import math

import jax
import jax.numpy as jnp
import numpyro.distributions as nd

from stochbp._src import checks
from stochbp._src.families.base import register
from stochbp._src.families.coordinate import CoordinateFamily, stack_orders


class NormalFamily(CoordinateFamily):
    name = "Normal"
    types = (nd.Normal,)
    max_order = 2
    reparameterized = True

    def check(self, d):
        checks.finite("Normal", "loc", d.loc)
        checks.positive("Normal", "scale", d.scale)

    def coefficients(self, d, order):
        terms = [d.loc, 0.5 * d.scale ** 2][:order]
        return stack_orders(terms, d.batch_shape)

    def weak_derivatives(self, d, key, num_samples, coupled):
        """With u = (x - mu) / sigma and phi the standard normal density:

        d/dmu N(x)    = (u / sigma) N(x): c = 1 / (sigma sqrt(2 pi)), x+- = mu +- sigma R,
                        R Rayleigh(1) (density r exp(-r^2 / 2));
        d/dsigma N(x) = ((u^2 - 1) / sigma) N(x): c = 1 / sigma, x+ = mu + sigma M with M
                        double-sided Maxwell (density u^2 phi(u)), x- = mu + sigma eps.

        Coupled: x+ and x- of the mean share R; for the scale M = s |(e1, e2, e3)| and
        eps = s |e1| (the same sign s and e1), which keeps both marginals. Uncoupled: the
        two parts use independent noise."""
        shape = (num_samples,) + tuple(d.batch_shape)
        loc = jnp.broadcast_to(d.loc, d.batch_shape)
        scale = jnp.broadcast_to(d.scale, d.batch_shape)
        loc0, scale0 = jax.lax.stop_gradient(loc), jax.lax.stop_gradient(scale)
        dtype = jnp.result_type(loc0, scale0)
        k_r, k_r2, k_sign, k_e = jax.random.split(key, 4)
        rayleigh = lambda k: jnp.sqrt(-2.0 * jnp.log1p(  # noqa: E731
            -jax.random.uniform(k, shape, dtype)))
        r_plus = rayleigh(k_r)
        r_minus = r_plus if coupled else rayleigh(k_r2)
        sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, shape), 1.0, -1.0).astype(dtype)
        e = jax.random.normal(k_e, (3,) + shape, dtype)
        maxwell = sign * jnp.sqrt(jnp.sum(e ** 2, axis=0))
        eps = sign * jnp.abs(e[0]) if coupled else e[0]
        mean_part = (loc, 1.0 / (scale0 * math.sqrt(2 * math.pi)),
                     loc0 + scale0 * r_plus, loc0 - scale0 * r_minus)
        scale_part = (scale, 1.0 / scale0, loc0 + scale0 * maxwell, loc0 + scale0 * eps)
        return [mean_part, scale_part]

    def cgf(self, d, t):
        return d.loc * t + 0.5 * (d.scale * t) ** 2


register(NormalFamily())

"""Gamma, Exponential and Chi2: Eq. 20.

The paper writes Gamma(k, mu) with shape k and *scale* mu; numpyro's Gamma takes a
rate beta = 1/mu. log phi(w) = -k log(1 - i mu w), so the CGF coefficients are
c_n = k mu^n / n and
    grad E[f] = sum_{n>=1} [grad k / n + (k / mu) grad mu] mu^n E[f^{(n)}(z)].
Exponential(rate) is k = 1 and Chi2(df) is k = df/2, mu = 2 (numpyro's Chi2 is a Gamma
subclass and is handled by the same rule). For polynomial f the series ends at f's
degree, so the rule is exact at that order (toy problem 1 of Section 6.1 at order 2).

Weak derivative with respect to the rate beta (for ``measure_valued()``): with
p(x; k, beta) = beta^k x^(k-1) e^(-beta x) / Gamma(k), d log p / d beta = k / beta - x,
and x p(x; k, beta) = (k / beta) p(x; k + 1, beta), so

    d p(x; k, beta) / d beta = (k / beta) [Gamma(k, beta)(x) - Gamma(k + 1, beta)(x)].

The shape k has d log p / dk = log(beta x) - psi(k), which changes sign at a point with
no closed form; stochbp knows no decomposition into two samplable laws for it, so
``measure_valued()`` estimates the shape's gradient with that score.

Every estimator draws these families through ``sample`` / ``pathwise_sample`` below:
mu times a unit-scale variate of stochbp's vectorised gamma sampler, whose implicit
derivative dz/dk is ``gamma_sampling.standard_gamma_grad`` (see that module).
"""
import jax
import jax.numpy as jnp
import numpyro.distributions as nd
from jax.scipy.special import digamma

from stochbp._src import checks, gamma_sampling
from stochbp._src.families.base import register
from stochbp._src.families.coordinate import CoordinateFamily, stack_orders


def gamma_coefficients(shape, scale, order, batch_shape):
    return stack_orders([shape * scale ** n / n for n in range(1, order + 1)], batch_shape)


class GammaFamily(CoordinateFamily):
    name = "Gamma"
    types = (nd.Gamma,)
    series = True
    reparameterized = True

    def check(self, d):
        checks.positive(type(d).__name__, "concentration", d.concentration)
        checks.positive(type(d).__name__, "rate", d.rate)

    def gamma_shape_scale(self, d):
        return d.concentration, 1.0 / d.rate

    def pathwise_sample(self, d, key, num_samples):
        """mu * Gamma(k, 1), differentiable in k (implicitly) and mu."""
        k, mu = self.gamma_shape_scale(d)
        shape = (num_samples,) + tuple(d.batch_shape)
        dtype = jnp.result_type(k, mu, float)
        return gamma_sampling.standard_gamma(key, k, shape, dtype) * mu

    def sample(self, d, key, num_samples):
        return jax.lax.stop_gradient(self.pathwise_sample(d, key, num_samples))

    def coefficients(self, d, order):
        k, mu = self.gamma_shape_scale(d)
        return gamma_coefficients(k, mu, order, d.batch_shape)

    def log_coefficients(self, d, order):
        """l_n = log k + n log mu - log n (every c_n is positive)."""
        k, mu = self.gamma_shape_scale(d)
        n = jnp.arange(2, order + 1).reshape((-1,) + (1,) * len(d.batch_shape))
        logs = jnp.log(k) + n * jnp.log(mu) - jnp.log(n)
        logs = jnp.broadcast_to(logs, (order - 1,) + tuple(d.batch_shape))
        return logs, jnp.ones_like(logs)

    def cgf(self, d, t):
        k, mu = self.gamma_shape_scale(d)
        return -k * jnp.log1p(-mu * t)

    def weak_derivatives(self, d, key, num_samples, coupled):
        """Rate beta: c = k / beta, x+ = G / beta, x- = G' / beta with G ~ Gamma(k, 1)
        and G' ~ Gamma(k + 1, 1). Coupled: G' = G + E, E ~ Exponential(1) independent
        of G (a Gamma(k + 1, 1) draw that shares G)."""
        k, _ = self.gamma_shape_scale(d)
        rate = jnp.broadcast_to(d.rate, d.batch_shape)
        k0 = jax.lax.stop_gradient(jnp.broadcast_to(k, d.batch_shape))
        rate0 = jax.lax.stop_gradient(rate)
        shape = (num_samples,) + tuple(d.batch_shape)
        k_g, k_e, k_g1 = jax.random.split(key, 3)
        g = gamma_sampling.standard_gamma(k_g, k0, shape, rate0.dtype)
        g1 = g + jax.random.exponential(k_e, shape, rate0.dtype) if coupled else \
            gamma_sampling.standard_gamma(k_g1, k0 + 1.0, shape, rate0.dtype)
        return [(rate, k0 / rate0, g / rate0, g1 / rate0)]

    def weak_derivative_scores(self, d, z):
        """The shape: d log p / dk = log(beta z) - psi(k)."""
        k = jnp.broadcast_to(d.concentration, d.batch_shape)
        k0, rate0 = jax.lax.stop_gradient(k), jax.lax.stop_gradient(d.rate)
        return [(k, jnp.log(rate0 * z) - digamma(k0))]

    def cgf_domain_check(self, d, t):
        checks.check_values("fourier_exponential()", "epsilon", t * (1.0 / d.rate),
                            lambda v: v < 1, "smaller than the rate for Gamma (its CGF "
                            "is finite only for t < rate)")

    def cgf_in_domain(self, d, t):
        return t * self.gamma_shape_scale(d)[1] < 1


class ExponentialFamily(GammaFamily):
    name = "Exponential"
    types = (nd.Exponential,)

    def check(self, d):
        checks.positive("Exponential", "rate", d.rate)

    def gamma_shape_scale(self, d):
        return jnp.ones_like(d.rate), 1.0 / d.rate

    def weak_derivative_scores(self, d, z):
        return []  # the rate is the only parameter


register(GammaFamily())
register(ExponentialFamily())

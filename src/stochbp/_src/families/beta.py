"""Beta(alpha, beta) through two gamma variables: Eq. 21.

With zeta_1 ~ Gamma(alpha, 1), zeta_2 ~ Gamma(beta, 1) and z = zeta_1 / (zeta_1 + zeta_2),
the gamma rule (Eq. 20, unit scale, c_n = shape / n) applied to h = f o z gives
    grad E[f] = sum_{n>=1} (1/n) [grad alpha E[d^n h / d zeta_1^n]
                                  + grad beta  E[d^n h / d zeta_2^n]].
Warning: for f(z) = z the n-th term of the series has size
(n-1)! / ((alpha+beta-1)...(alpha+beta-n)) and the expected derivative is infinite once
n >= alpha + beta, so this series does not converge for ordinary f; the truncated rule
is biased (least biased near n = (alpha+beta)/2). See docs/series_bias.md for measured bias.

Draws (every estimator's, through ``sample`` / ``pathwise_sample``) use the same two
gamma variables from stochbp's vectorised sampler, in log space:
z = sigmoid(log zeta_1 - log zeta_2), clamped to [tiny, 1 - eps] as numpyro clamps, with
the implicit derivative of each log zeta (gamma_sampling.standard_gamma_log).
"""
import jax
import jax.numpy as jnp
import numpyro.distributions as nd

from stochbp._src import checks, gamma_sampling, series
from stochbp._src.families.base import Family, register, require_order


def gamma_latent(concentration, key, num_samples):
    """Unit-rate gamma draws, one per entry of ``concentration``, no gradient."""
    alpha = jax.lax.stop_gradient(concentration)
    return gamma_sampling.standard_gamma(key, alpha, (num_samples,) + alpha.shape,
                                         jnp.result_type(alpha, float))


def log_gamma_draws(concentration, key, num_samples):
    """log Gamma(concentration, 1) draws (S, *concentration.shape) with the implicit
    derivative in the concentration."""
    conc = jnp.asarray(concentration)
    return gamma_sampling.standard_gamma_log(key, conc, (num_samples,) + conc.shape,
                                             jnp.result_type(conc, float))


def clamp_unit(z):
    """Clamp to [tiny, 1 - eps], as numpyro's Beta and Dirichlet samplers do."""
    info = jnp.finfo(z.dtype)
    return jnp.clip(z, info.tiny, 1.0 - info.eps)


def unit_gamma_coefficients(concentration, order):
    return jnp.stack([concentration / n for n in range(1, order + 1)])


class BetaFamily(Family):
    name = "Beta"
    types = (nd.Beta,)
    series = True
    reparameterized = True

    def check(self, d):
        checks.positive("Beta", "concentration1", d.concentration1)
        checks.positive("Beta", "concentration0", d.concentration0)

    def pathwise_sample(self, d, key, num_samples):
        a = jnp.broadcast_to(d.concentration1, d.batch_shape)
        b = jnp.broadcast_to(d.concentration0, d.batch_shape)
        logs = log_gamma_draws(jnp.stack([a, b], axis=-1), key, num_samples)
        return clamp_unit(jax.nn.sigmoid(logs[..., 0] - logs[..., 1]))

    def sample(self, d, key, num_samples):
        return jax.lax.stop_gradient(self.pathwise_sample(d, key, num_samples))

    def fourier(self, f, d, key, num_samples, order):
        n = require_order(self, order)
        a = jnp.broadcast_to(d.concentration1, d.batch_shape)
        b = jnp.broadcast_to(d.concentration0, d.batch_shape)
        conc = jnp.stack([a, b], axis=-1)
        to_z = lambda zeta: zeta[..., 0] / jnp.sum(zeta, axis=-1)  # noqa: E731
        return series.series_surrogate(f, gamma_latent(conc, key, num_samples),
                                       unit_gamma_coefficients(conc, n), to_z=to_z)


register(BetaFamily())

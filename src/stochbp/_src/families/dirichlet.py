"""Dirichlet(alpha) through K gamma variables: Eq. 22.

With zeta_k ~ Gamma(alpha_k, 1) and z = zeta / sum(zeta), the unit-scale gamma rule on
h = f o z gives grad E[f] = sum_n (1/n) sum_k grad alpha_k E[d^n h / d zeta_k^n].
Like Eq. 21 this series diverges for ordinary f (terms grow like (n-1)!); the
truncated rule is biased, and docs/series_bias.md measures by how much.

Draws (every estimator's) normalise K gamma variables of stochbp's vectorised sampler
in log space, z = softmax(log zeta), clamped to [tiny, 1 - eps] as numpyro clamps.
"""
import jax
import jax.numpy as jnp
import numpyro.distributions as nd

from stochbp._src import checks, series
from stochbp._src.families.base import Family, register, require_order
from stochbp._src.families.beta import (clamp_unit, gamma_latent, log_gamma_draws,
                                        unit_gamma_coefficients)


class DirichletFamily(Family):
    name = "Dirichlet"
    types = (nd.Dirichlet,)
    series = True
    reparameterized = True

    def check(self, d):
        checks.positive("Dirichlet", "concentration", d.concentration)

    def pathwise_sample(self, d, key, num_samples):
        conc = jnp.broadcast_to(d.concentration, d.batch_shape + d.event_shape)
        logs = log_gamma_draws(conc, key, num_samples)
        return clamp_unit(jax.nn.softmax(logs, axis=-1))

    def sample(self, d, key, num_samples):
        return jax.lax.stop_gradient(self.pathwise_sample(d, key, num_samples))

    def fourier(self, f, d, key, num_samples, order):
        n = require_order(self, order)
        conc = jnp.broadcast_to(d.concentration, d.batch_shape + d.event_shape)
        to_z = lambda zeta: zeta / jnp.sum(zeta, axis=-1, keepdims=True)  # noqa: E731
        return series.series_surrogate(f, gamma_latent(conc, key, num_samples),
                                       unit_gamma_coefficients(conc, n), to_z=to_z)


register(DirichletFamily())

"""Gaussian mixtures (numpyro MixtureSameFamily): pathwise gradients by Graves' rule.

Components Normal (1-D), Independent(Normal, 1) (diagonal) or MultivariateNormal (full
covariance). ``pathwise()`` samples ancestrally and differentiates every coordinate's
1-D conditional mixture implicitly, dx_d = -dF_d(x_d | x_<d) / f_d(x_d | x_<d) (Graves
2016, Eq. 6, with the analytic mixing-weight integral of his Eq. 22); the derivation and
the full-covariance extension are in ``stochbp._src.mixture``. ``score_function()`` uses
numpyro's log density and accepts any component family. ``mixture_marginal()`` sums the
component index out (``component_draws``: per-component reparameterised draws and the
weights' exact derivative). There is no Fourier rule.
"""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd

from stochbp._src import mixture, series
from stochbp._src.families.multivariate_normal import mean_hessian_blocks
from stochbp._src.families.base import Family, register


class MixtureFamily(Family):
    name = "MixtureSameFamily"
    types = (nd.MixtureSameFamily,)
    reparameterized = True
    has_fourier = False  # fourier() refuses it in check(), before any tracing

    def check(self, d):
        mixture.check_mixture(d)

    def valid(self, d):
        """Component and weight constraints, and every weight strictly positive (an
        exact zero is refused: neither estimator sees the one-sided derivative there)."""
        return super().valid(d) & jnp.all(mixture.log_weights(d) > -jnp.inf)

    def pathwise_sample(self, d, key, num_samples):
        return mixture.mixture_rsample(d, key, (num_samples,))

    def component_draws(self, d, key, num_samples, allocation, common_noise=False,
                        noise="iid", rule="pathwise"):
        return mixture.marginal_draws(d, key, num_samples, allocation, common_noise, noise,
                                      rule)

    def component_hessians(self, f, d, draws):
        """Per draw, the second derivatives of f that pair with ``component_draws``'
        covariance parameters under ``rule="fourier"``: the pure second derivatives
        d^2 f / dx^2 of every coordinate (shape of the draws) for Normal and diagonal
        components, the diagonal D x D blocks of the Hessian (draws' shape + (D,)) for
        full covariance. Taylor mode per draw (one pass when f is proven separable)."""
        draws = jax.lax.stop_gradient(draws)
        shape = draws.shape[1:]
        if mixture.gaussian_parts(d)[0] != "full":
            return jax.vmap(lambda x: series.mean_derivatives(f, x[None], 2)[1])(draws)
        k = shape[-1]
        nb = int(np.prod(shape[:-1], dtype=int))
        blocks = jax.vmap(lambda x: mean_hessian_blocks(f, x.reshape(1, nb * k), shape, k))
        return blocks(draws).reshape(draws.shape + (k,))


register(MixtureFamily())

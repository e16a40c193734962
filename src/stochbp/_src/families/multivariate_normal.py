"""Multivariate normal with full covariance: Eq. 15.

log phi(w) = i mu^T w - w^T Sigma w / 2 (the seed text misprints this), so Theorem 1
has two terms:
    grad E[f] = (d mu / d theta)^T E[grad f(z)] + 1/2 Tr[(d Sigma / d theta) E[Hess f(z)]].
The rule is exact; ``order=1`` keeps only the mean term. The Hessian is formed per
batch element (blocks of size event_dim x event_dim).
"""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
from jax import lax

from stochbp._src import checks, series
from stochbp._src.families.base import Family, register


class MultivariateNormalFamily(Family):
    name = "MultivariateNormal"
    types = (nd.MultivariateNormal,)
    reparameterized = True

    def check(self, d):
        checks.finite("MultivariateNormal", "loc", d.loc)
        checks.check_values(
            "MultivariateNormal", "scale_tril (Cholesky factor of the covariance)",
            jnp.diagonal(d.scale_tril, axis1=-2, axis2=-1),
            lambda v: np.isfinite(v) & (v > 0),
            "a lower-triangular matrix with a positive diagonal (is the covariance "
            "positive definite?)")

    def fourier(self, f, d, key, num_samples, order):
        if order is not None:
            order = checks.positive_int("fourier()", "order", order)
        z = lax.stop_gradient(d.sample(key, (num_samples,)))  # (S, *batch, k)
        value = jnp.mean(jax.vmap(f)(z))
        shape = d.batch_shape + d.event_shape
        grads = jnp.mean(jax.vmap(jax.grad(f))(z), axis=0)
        loc = jnp.broadcast_to(d.loc, shape)
        out = value + series.zero_valued(loc, grads)
        if order is not None and order < 2:
            return out
        k = d.event_shape[0]
        nb = int(np.prod(d.batch_shape, dtype=int))
        flat_f = lambda x: f(x.reshape(shape))  # noqa: E731
        hess = jnp.mean(jax.vmap(jax.hessian(flat_f))(z.reshape(num_samples, -1)), axis=0)
        blocks = hess.reshape(nb, k, nb, k)[jnp.arange(nb), :, jnp.arange(nb), :]
        cov = jnp.broadcast_to(d.covariance_matrix, d.batch_shape + (k, k))
        return out + 0.5 * series.zero_valued(cov.reshape(nb, k, k), blocks)


register(MultivariateNormalFamily())

"""Multivariate normal with full covariance: Eq. 15.

log phi(w) = i mu^T w - w^T Sigma w / 2 (the seed text misprints this), so Theorem 1
has two terms:
    grad E[f] = (d mu / d theta)^T E[grad f(z)] + 1/2 Tr[(d Sigma / d theta) E[Hess f(z)]].
The rule is exact; ``order=1`` keeps only the mean term. Only the Hessian's diagonal
blocks (one event_dim x event_dim block per batch element) are computed, never the
full Hessian over all batch elements.
"""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
from jax import lax

from stochbp._src import checks, series, taylor
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
        cov = jnp.broadcast_to(d.covariance_matrix, d.batch_shape + (k, k))
        blocks = mean_hessian_blocks(f, z.reshape(num_samples, nb * k), shape, k)
        return out + 0.5 * series.zero_valued(cov.reshape(nb, k, k), blocks)


    def fourier_derivative_order(self, order):
        return 1 if order is not None and order < 2 else 2


def mean_hessian_blocks(f, flat_z, shape, k):
    """Sample mean of the diagonal k x k blocks of the Hessian of f, shape (nb, k, k).

    ``flat_z`` holds S samples flattened to (S, m), m = nb k; batch element b owns
    coordinates b k .. b k + k - 1. Column j = b k + a of the Hessian is the
    Hessian-vector product with e_j, the derivative of grad f along e_j (forward over
    reverse; ``jax.linearize`` evaluates grad f once and reuses it for every column).
    Of that column only the k rows of block b are kept, so the result needs n k^2
    memory; the m columns go in chunks (``taylor.map_coordinates``), so the work space
    is S m per column in the chunk instead of the (n k)^2 full Hessian per sample.
    """
    num_samples, m = flat_z.shape
    flat_f = lambda x: f(x.reshape(shape))  # noqa: E731
    _, hvp = jax.linearize(jax.vmap(jax.grad(flat_f)), flat_z)

    def block_column(j):  # H[b k : b k + k, j] averaged over samples
        e = taylor.unit_vector(j, m, flat_z.dtype)
        column = jnp.mean(hvp(jnp.broadcast_to(e, flat_z.shape)), axis=0)
        return lax.dynamic_slice_in_dim(column, (j // k) * k, k)

    columns = taylor.map_coordinates(block_column, m, num_samples * m)  # (m, k)
    # columns[b k + a, c] = H[b k + c, b k + a]; return [b, c, a] as the Hessian's layout
    return jnp.swapaxes(columns.reshape(m // k, k, k), 1, 2)


register(MultivariateNormalFamily())

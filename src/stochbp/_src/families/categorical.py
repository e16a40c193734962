"""Categorical (independent coordinates, K classes): Eq. 18, from Theorem 2.

grad E[f] = sum_j sum_{k != k*} (d pi_jk / d theta) E_{z_-j}[f(z_-j, k) - f(z_-j, k*)].
Because sum_k d pi_jk = 0 this equals sum_j sum_k (d pi_jk / d theta) E[f(z_-j, k)],
which is what the surrogate uses: d * K evaluations per sample in one vmapped batch.
"""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
from jax import lax

from stochbp._src import checks, series
from stochbp._src.families.base import Family, register


def substituted_values(f, z, num_classes):
    """F[j, k] = f(z with z_j = k) for every coordinate j and class k of one sample."""
    shape = z.shape
    flat = z.reshape(-1)
    d = flat.shape[0]
    classes = jnp.arange(num_classes, dtype=flat.dtype)
    grid = jnp.broadcast_to(flat, (d, num_classes, d))
    grid = jnp.where(jnp.eye(d, dtype=bool)[:, None, :], classes[None, :, None], grid)
    vals = jax.vmap(jax.vmap(lambda x: f(x.reshape(shape))))(grid)  # (d, K)
    return vals.reshape(shape + (num_classes,))


class CategoricalFamily(Family):
    name = "Categorical"
    types = (nd.CategoricalProbs, nd.CategoricalLogits)

    def check(self, d):
        if isinstance(d, nd.CategoricalLogits):
            checks.check_values("Categorical", "logits", d.logits,
                                lambda v: ~np.isposinf(v), "not +inf")
            return
        checks.probabilities("Categorical", "probs", d.probs)
        checks.check_values("Categorical", "probs", d.probs,
                            lambda v: np.abs(v.sum(-1, keepdims=True) - 1) < 1e-4,
                            "a probability vector along the last axis (summing to 1)")

    def fourier(self, f, d, key, num_samples, order):
        z = lax.stop_gradient(d.sample(key, (num_samples,)))
        value = jnp.mean(jax.vmap(f)(z))
        num_classes = d.probs.shape[-1]
        vals = jnp.mean(jax.vmap(lambda x: substituted_values(f, x, num_classes))(z), 0)
        probs = jnp.broadcast_to(d.probs, d.batch_shape + (num_classes,))
        return value + series.zero_valued(probs, vals)


register(CategoricalFamily())

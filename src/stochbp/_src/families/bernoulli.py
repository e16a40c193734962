"""Bernoulli (probs or logits; independent bits): Eq. 17, from Theorem 2.

grad E[f] = sum_j (d pi_j / d theta) E_{z_-j}[f(z_-j, z_j = 1) - f(z_-j, z_j = 0)].
For a sample z the difference is (2 z_j - 1) (f(z) - f(flip_j z)), so each sample costs
d + 1 evaluations of f, done as one vmapped batch (and S samples as one more vmap).
Exact (zero variance) for d = 1.

Declared structure makes the evaluations cheaper:

* ``stochbp.linear(g, A, b)``: flipping bit j moves u = A z + b by the rank-one update
  (1 - 2 z_j) A[:, j], so the d flipped evaluations are g(u + delta_j A[:, j]) -- no
  matmul is recomputed;
* ``stochbp.per_example(term, data)`` (batch shape (n, ...)): flipping a bit of row i
  changes only term i, so the rule costs n (d + 1) evaluations of one term instead of
  n d + 1 of the whole-batch f. The term may itself be a ``stochbp.linear``.
"""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
from jax import lax

from stochbp._src import checks, series
from stochbp._src.families.base import Family, register
from stochbp._src.linear import LinearComposite
from stochbp._src.structure import PerExample, RowTerms
from stochbp._src.substitution import column_substitutions


def _generic_flips(f, z, args=()):
    shape = z.shape
    flat = z.reshape(-1)
    one = jnp.ones((), flat.dtype)
    flipped = jnp.where(jnp.eye(flat.shape[0], dtype=bool), one - flat, flat)  # (d, d)
    fz = f(z, *args)
    f_flipped = jax.vmap(lambda x: f(x.reshape(shape), *args))(flipped)
    sign = 2 * flat.astype(f_flipped.dtype) - 1
    return fz, (sign * (fz - f_flipped)).reshape(shape)


def _linear_flips(lc, z, args=()):
    """f = linear(g, A, b): flipping z_j is u -> u + (1 - 2 z_j) A[:, j]."""
    u = lc.preactivation(z)  # (m,)
    delta = (1 - 2 * z).astype(u.dtype)  # new value minus old, per coordinate
    flipped_u = u + delta[:, None] * lc.columns()  # (d, m)
    fz = lc.from_preactivation(u, *args)
    f_flipped = jax.vmap(lambda v: lc.from_preactivation(v, *args))(flipped_u)
    return fz, -delta * (fz - f_flipped)


def _one_row(f, z, args=()):
    if isinstance(f, LinearComposite) and f.num_classes is None \
            and z.shape == (f.input_dim,):
        return _linear_flips(f, z, args)
    return _generic_flips(f, z, args)


def _row_flips(f, z):
    """f = row_terms(terms): flip column j in every row at once (one evaluation of the
    terms per j; matrix products of z become rank-one updates, see substitution.py)."""
    flat = z.reshape(z.shape[0], -1)  # (n, m)
    base = f.values(z)  # (n,)
    cols = jnp.arange(flat.shape[1])
    coef = (1 - 2 * flat).T  # (m, n): flipping column j moves row i by 1 - 2 z_ij
    flipped = column_substitutions(lambda x: f.values(x.reshape(z.shape)), flat, cols,
                                   coef)  # (m, n)
    sign = 2 * flat.astype(flipped.dtype) - 1
    return jnp.sum(base), (sign * (base[:, None] - flipped.T)).reshape(z.shape)


def value_and_differences(f, z):
    """(f(z), D) with D_j = f(z with z_j=1) - f(z with z_j=0), for one sample z."""
    if isinstance(f, RowTerms):
        return _row_flips(f, z)
    if isinstance(f, PerExample):
        values, diffs = f.map_value_and_extra(_one_row, z)
        return jnp.sum(values), diffs
    return _one_row(f, z)


class BernoulliFamily(Family):
    name = "Bernoulli"
    types = (nd.BernoulliProbs, nd.BernoulliLogits)
    discrete = True

    def num_classes(self, d):
        return None  # binary coordinates with values 0 and 1

    def logits(self, d):
        """logits, or log p - log(1 - p) for a probs-parameterised Bernoulli."""
        if isinstance(d, nd.BernoulliProbs):
            l = jnp.log(d.probs) - jnp.log1p(-d.probs)
        else:
            l = d.logits
        return jnp.broadcast_to(l, d.batch_shape)

    def check_logits(self, owner, d):
        if isinstance(d, nd.BernoulliProbs):
            checks.check_values(owner, "probs", d.probs, lambda v: (v > 0) & (v < 1),
                                "in the open interval (0, 1) (the estimator works on "
                                "logits log p - log(1 - p))")
        else:
            checks.finite(owner, "logits", d.logits)

    def check(self, d):
        if isinstance(d, nd.BernoulliLogits):
            checks.check_values("Bernoulli", "logits", d.logits, lambda v: ~np.isinf(v),
                                "finite")
        else:
            checks.probabilities("Bernoulli", "probs", d.probs)

    def fourier(self, f, d, key, num_samples, order):
        z = lax.stop_gradient(d.sample(key, (num_samples,)))
        values, diffs = jax.vmap(lambda x: value_and_differences(f, x))(z)
        probs = jnp.broadcast_to(d.probs, d.batch_shape)
        return jnp.mean(values) + series.zero_valued(probs, jnp.mean(diffs, axis=0))

    def cgf(self, d, t):
        return jnp.log1p(d.probs * jnp.expm1(t))


register(BernoulliFamily())

"""Categorical (independent coordinates, K classes): Eq. 18, from Theorem 2.

grad E[f] = sum_j sum_{k != k*} (d pi_jk / d theta) E_{z_-j}[f(z_-j, k) - f(z_-j, k*)].
Because sum_k d pi_jk = 0 this equals sum_j sum_k (d pi_jk / d theta) E[f(z_-j, k)],
which is what the surrogate uses: d * K evaluations per sample in one vmapped batch
(and S samples as one more vmap).

Declared structure makes the evaluations cheaper:

* ``stochbp.linear(g, A, b)`` with a categorical A of shape (m, d, K) (acting on the
  one-hot encoding, u = sum_j A[:, j, z_j] + b): setting z_j = k moves u by the rank-one
  update A[:, j, k] - A[:, j, z_j], so the d K evaluations are g on
  u + A[:, j, k] - A[:, j, z_j] -- no matmul at all. A matrix A of shape (m, d) (class
  indices used as numbers, u = A z + b) gets the same treatment with (k - z_j) A[:, j];
* ``stochbp.per_example(term, data)`` (batch shape (n, d)): changing a coordinate of
  row i changes only term i, so the rule costs n d K evaluations of one term instead of
  as many of the whole-batch f; the other examples' terms are added back as the
  constant they are, so the result equals the undeclared rule's.
"""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
from jax import lax

from stochbp._src import checks, series
from stochbp._src.families.base import Family, register
from stochbp._src.registry import unwrap
from stochbp._src.linear import LinearComposite
from stochbp._src.structure import PerExample, RowTerms, check_num_classes
from stochbp._src.substitution import column_substitutions


#: How far from 1 a concrete probability vector's sum may be (float32 rounding).
PROBS_SUM_TOLERANCE = 1e-4


def _generic_substitutions(f, z, num_classes, args=()):
    shape = z.shape
    flat = z.reshape(-1)
    d = flat.shape[0]
    classes = jnp.arange(num_classes, dtype=flat.dtype)
    grid = jnp.broadcast_to(flat, (d, num_classes, d))
    grid = jnp.where(jnp.eye(d, dtype=bool)[:, None, :], classes[None, :, None], grid)
    vals = jax.vmap(jax.vmap(lambda x: f(x.reshape(shape), *args)))(grid)  # (d, K)
    return f(z, *args), vals.reshape(shape + (num_classes,))


def _linear_substitutions(lc, z, num_classes, args=()):
    """f = linear(g, A, b): setting z_j = k is a rank-one update of u."""
    d = z.shape[0]
    cols = lc.columns()
    if lc.num_classes is not None:  # one-hot: cols[j, k] = A[:, j, k], shape (d, K, m)
        current = cols[jnp.arange(d), z]  # (d, m)
        u = jnp.sum(current, axis=0)
        u = u if lc.b is None else u + lc.b
        moved = u + (cols - current[:, None, :])  # (d, K, m)
    else:  # indices used as numbers: cols[j] = A[:, j], shape (d, m)
        u = lc.preactivation(z)
        step = (jnp.arange(num_classes)[None, :] - z[:, None]).astype(u.dtype)  # (d, K)
        moved = u + step[:, :, None] * cols[:, None, :]
    fz = lc.from_preactivation(u, *args)
    g = lambda v: lc.from_preactivation(v, *args)  # noqa: E731
    return fz, jax.vmap(jax.vmap(g))(moved)


def _one_row(num_classes):
    def row(f, z, args=()):
        if isinstance(f, LinearComposite) and z.shape == (f.input_dim,) and \
                f.num_classes in (None, num_classes):
            return _linear_substitutions(f, z, num_classes, args)
        return _generic_substitutions(f, z, num_classes, args)
    return row


def value_and_substitutions(f, z, num_classes):
    """(f(z), F) with F[j, k] = f(z with z_j = k), for one sample z."""
    if isinstance(f, RowTerms):  # set column j to k in every row at once
        flat = z.reshape(z.shape[0], -1)  # (n, m)
        base = f.values(z)  # (n,)
        m = flat.shape[1]
        cols = jnp.repeat(jnp.arange(m), num_classes)  # (m K,)
        classes = jnp.tile(jnp.arange(num_classes, dtype=flat.dtype), m)
        coef = classes[:, None] - flat[:, cols].T  # (m K, n): new class minus old
        vals = column_substitutions(lambda x: f.values(x.reshape(z.shape)), flat, cols,
                                    coef).reshape(m, num_classes, -1)  # (m, K, n)
        total = jnp.sum(base)
        subs = jnp.transpose(vals, (2, 0, 1)) + (total - base)[:, None, None]
        return total, subs.reshape(z.shape + (num_classes,))
    row = _one_row(num_classes)
    if isinstance(f, PerExample):
        values, subs = f.map_value_and_extra(row, z)
        total = jnp.sum(values)
        # f(z with z_ij = k) = term_i(...) + the other examples' terms, unchanged
        others = (total - values).reshape(values.shape + (1,) * (subs.ndim - 1))
        return total, subs + others
    return row(f, z)


class CategoricalFamily(Family):
    name = "Categorical"
    types = (nd.CategoricalProbs, nd.CategoricalLogits)
    discrete = True

    def num_classes(self, d):
        return d.probs.shape[-1]

    def logits(self, d):
        """logits, or log p for a probs-parameterised Categorical."""
        l = jnp.log(d.probs) if isinstance(d, nd.CategoricalProbs) else d.logits
        return jnp.broadcast_to(l, d.batch_shape + l.shape[-1:])

    def class_probabilities(self, d):
        return jnp.broadcast_to(d.probs, d.batch_shape + d.probs.shape[-1:])

    def score_mean(self, d, weights):
        """By probs, log p(z) = log p_z is not normalised in the parameters: for each
        coordinate E[d log p_z / d p_c] = p_c / p_c = 1, so the surrogate is
        sum_j weights_j sum_c (p_jc - sg p_jc), j over the coordinates of ``d`` (any
        wrapper's batch and event dims). By logits the expected score is zero."""
        base = unwrap(d)
        if not isinstance(base, nd.CategoricalProbs):
            return super().score_mean(d, weights)
        full = tuple(d.batch_shape) + tuple(d.event_shape)
        probs = jnp.broadcast_to(base.probs, full + base.probs.shape[-1:])
        w = jnp.broadcast_to(weights, full)[..., None]
        return jnp.sum(w * (probs - lax.stop_gradient(probs)))

    def from_class_probabilities(self, probs):
        return nd.CategoricalProbs(probs)

    def check_logits(self, owner, d):
        if isinstance(d, nd.CategoricalProbs):
            checks.check_values(owner, "probs", d.probs, lambda v: v > 0,
                                "positive (the estimator works on logits log p)")
        else:
            checks.finite(owner, "logits", d.logits)

    def logit_surrogate(self, d, ghat, f_mean, *, stop=True):
        """For probs-parameterised coordinates the probabilities are unnormalised
        parameters: the gradient reported is that of the multilinear extension
        sum_k p_jk E[f | z_j = k], as for fourier() and score_function(). It differs
        from the logit-chained gradient by E[f] along (1, ..., 1) per coordinate,
        added here with f_mean (the sample mean of f, an unbiased estimate of E[f])."""
        out = series.zero_valued_term(self.logits(d), ghat, stop=stop)
        if isinstance(d, nd.CategoricalProbs):
            probs = jnp.broadcast_to(d.probs, ghat.shape)
            out = out + series.zero_valued_term(
                probs, jnp.broadcast_to(f_mean, ghat.shape), stop=stop)
        return out

    def check(self, d):
        if isinstance(d, nd.CategoricalLogits):
            checks.check_values("Categorical", "logits", d.logits,
                                lambda v: ~np.isposinf(v), "not +inf")
            return
        checks.probabilities("Categorical", "probs", d.probs)
        checks.check_values("Categorical", "probs", d.probs,
                            lambda v: np.abs(v.sum(-1, keepdims=True) - 1) < PROBS_SUM_TOLERANCE,
                            "a probability vector along the last axis (summing to 1)")

    def valid(self, d):
        """As ``check``: logits may be -inf (a masked class), never +inf or NaN;
        probabilities in [0, 1] summing to 1."""
        if isinstance(d, nd.CategoricalLogits):
            return jnp.all((d.logits < jnp.inf) & ~jnp.isnan(d.logits))
        p = d.probs
        return jnp.all((p >= 0) & (p <= 1)) & jnp.all(
            jnp.abs(jnp.sum(p, -1) - 1) < PROBS_SUM_TOLERANCE)

    def fourier(self, f, d, key, num_samples, order):
        num_classes = self.num_classes(d)
        check_num_classes("fourier()", f, num_classes)
        z = lax.stop_gradient(d.sample(key, (num_samples,)))
        values, subs = jax.vmap(lambda x: value_and_substitutions(f, x, num_classes))(z)
        probs = jnp.broadcast_to(d.probs, d.batch_shape + (num_classes,))
        return jnp.mean(values) + series.zero_valued(probs, jnp.mean(subs, axis=0))


register(CategoricalFamily())

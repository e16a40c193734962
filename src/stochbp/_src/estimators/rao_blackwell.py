"""Rao-Blackwellised top-k partial enumeration (Liu, Regier, Tripuraneni, Jordan &
McAuliffe 2019) for Categorical variables, one variable at a time.

For variable j with probabilities p_j, let C_j be its k most probable classes and
w_j = 1 - sum_{c in C_j} p_j(c) the mass of the others, whose conditional law is
q_j(c) = p_j(c) 1[c not in C_j] / w_j. Holding the other variables at a joint sample
z_-j,

    E[f] = E_{z_-j}[ sum_{c in C_j} p_j(c) f(z_-j, c) + w_j E_{x ~ q_j}[f(z_-j, x)] ].

The first sum is differentiated exactly (k evaluations of f per variable and context
draw); the second is the product w_j E_{q_j}[.]: the gradient of w_j times a sampled
value of f, plus w_j times a base estimator's gradient of E_{q_j}[f(z_-j, .)] (the
score function by default). The sampled part costs one draw per variable, and its
variance is at most w_j^2 times the base estimator's on q_j, so the estimator gains
most when the top k classes hold most of the mass. Unbiased whenever the base estimator
is.

Implementation: with S samples, the exact sum averages S joint context draws z^(s); the
rest of every variable is drawn S times by the base estimator, applied once to the
batch of conditionals q (batch (d,)) and the declared per-variable function
``per_example(lambda x, (w_j, j): w_j f(z^(1) with z_j = x))`` (so a score-function
base weights variable j's score by its own term only). The top-k sets are those of the
current parameters (piecewise constant, not differentiated). Gradients with respect
to probs are those of the multilinear extension sum_c p_jc E[f | z_j = c], as for
fourier() and score_function(). The surrogate's value is the mean of f over the S
context draws. Cost per sample: d k + d + 1 evaluations of f.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from stochbp._src import checks, structure
from stochbp._src.estimators.base import (Estimator, register_estimator, require_family,
                                          unsupported)
from stochbp._src.estimators.score_function import score_function
from stochbp._src.registry import family_of, unwrap


def _conditional(p, top):
    """(w, q): the mass outside the top-k classes and the conditional law there."""
    outside = jnp.ones(p.shape, bool).at[jnp.arange(p.shape[0])[:, None], top].set(False)
    rest = jnp.where(outside, p, 0.0)
    w = jnp.sum(rest, axis=-1)
    # all the mass in the top k (possible only through rounding or zero probs): any law
    # on the rest will do, its weight w is 0
    uniform = outside / jnp.sum(outside, axis=-1, keepdims=True)
    safe_w = jnp.where(w > 0, w, 1.0)[:, None]
    q = jnp.where((w > 0)[:, None], rest / safe_w, uniform)
    return w, q


@register_estimator(data_fields=("estimator",))
class RaoBlackwellTopK(Estimator):
    k: int = 1
    estimator: Estimator = None

    @property
    def name(self) -> str:
        return f"rao_blackwell_topk(k={self.k}, estimator={self.estimator.name})"

    def init(self, f, dist, key):
        return self.estimator.init(f, dist, key)

    def check_state(self, state):
        self.estimator.check_state(state)

    def check(self, dist):
        owner = "rao_blackwell_topk()"
        fam = require_family(owner, dist)
        base = unwrap(dist)
        categorical = fam.discrete and fam.has_class_probabilities()
        num_classes = fam.num_classes(base) if categorical else None
        if num_classes is None or not fam.has_class_probabilities():
            raise unsupported(owner, dist, "it is defined for categorical variables only",
                              "For Bernoulli variables stochbp.fourier() sums over both "
                              "values exactly.")
        if self.k >= num_classes:
            raise ValueError(f"rao_blackwell_topk(): k must be below the number of classes "
                             f"K={num_classes} (k = K leaves nothing to sample; use "
                             f"stochbp.fourier() to sum over every class); got k={self.k}")
        # the base estimator must handle a Categorical whose top-k classes have mass 0
        probs = jnp.concatenate([jnp.zeros(self.k), jnp.full(num_classes - self.k,
                                                             1.0 / (num_classes - self.k))])
        probe = fam.from_class_probabilities(jnp.broadcast_to(probs, (2, num_classes)))
        try:
            self.estimator.check(probe)
        except ValueError as err:
            raise ValueError(f"rao_blackwell_topk(): the base estimator "
                             f"{self.estimator.name} cannot sample the remaining classes (a "
                             "Categorical whose top-k classes have probability 0); use "
                             f"stochbp.score_function(...). Its error: {err}") from None

    def min_samples(self, dist):
        """What the base estimator needs for the sampled remainder."""
        return self.estimator.min_samples(dist)

    def surrogate(self, f, dist, key, num_samples, state):
        base = unwrap(dist)
        fam = family_of(base)
        K = fam.num_classes(base)
        shape = tuple(base.batch_shape)
        p = fam.class_probabilities(base).reshape(-1, K)  # (d, K)
        d = p.shape[0]
        _, top = lax.top_k(lax.stop_gradient(p), self.k)  # (d, k)
        context_key, rest_key = jax.random.split(key)
        z = lax.stop_gradient(dist.sample(context_key, (num_samples,)))
        z = z.reshape(num_samples, d)
        put = lambda x, j, c: x.at[j].set(c.astype(x.dtype)).reshape(shape)  # noqa: E731

        # exact part: sum over the top-k classes of every variable, per context draw
        def exact(x):
            j = jnp.repeat(jnp.arange(d), self.k)
            vals = jax.vmap(lambda jj, c: f(put(x, jj, c)))(j, top.reshape(-1))
            return vals.reshape(d, self.k)
        top_values = lax.stop_gradient(jnp.mean(jax.vmap(exact)(z), axis=0))  # (d, k)
        p_top = jnp.take_along_axis(p, top, axis=-1)
        exact_part = jnp.sum(p_top * top_values.astype(p.dtype))

        # sampled part: w_j times the base estimator on q_j, in the first context
        w, q = _conditional(p, top)
        context = z[0]
        term = lambda x, data: data[0] * f(put(context, data[1], x))  # noqa: E731
        rows = structure.per_example(term, (w, jnp.arange(d)))
        rest, state = self.estimator.surrogate(rows, fam.from_class_probabilities(q),
                                               rest_key,
                                               num_samples, state)
        value = jnp.mean(jax.vmap(lambda x: f(x.reshape(shape)))(z))
        grad_part = exact_part + rest
        return value + grad_part - lax.stop_gradient(grad_part), state


def rao_blackwell_topk(k: int = 1, estimator: Estimator = None) -> RaoBlackwellTopK:
    """Rao-Blackwellised top-k partial enumeration for Categorical variables: the k most
    probable classes of each variable are summed exactly, the rest sampled with
    ``estimator`` (default ``stochbp.score_function()``; a baseline such as
    ``"leave_one_out"`` with num_samples >= 2 helps). See the module docstring for the
    equation. ``k`` is an integer from 1 to K - 1. Unbiased when the base estimator is;
    d k + d + 1 evaluations of f per sample, f taking class indices."""
    k = checks.positive_int("rao_blackwell_topk()", "k", k)
    if estimator is None:
        estimator = score_function()
    if not isinstance(estimator, Estimator):
        raise TypeError("rao_blackwell_topk(): estimator must be built by a stochbp "
                        f"factory such as stochbp.score_function(); got "
                        f"estimator={estimator!r}")
    return RaoBlackwellTopK(k=k, estimator=estimator)

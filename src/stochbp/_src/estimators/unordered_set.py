"""The unordered set estimator with its built-in baseline (Kool, van Hoof & Welling
2020), for Categorical variables, one variable at a time.

For one categorical variable with probabilities p, draw k distinct classes S without
replacement (the k largest of log p + Gumbel noise). Write P^A(T) for the probability
that sequential sampling without replacement from the classes outside A draws the set T
first, in any order. With the leave-one-out ratios

    R(S, s)      = P^{s}(S \\ {s}) / P(S),
    R^{s}(S, s') = P^{s, s'}(S \\ {s, s'}) / P^{s}(S \\ {s})   (s' != s),  R^{s}(S, s) = 1,

the estimate of grad E[f] is

    ghat = sum_{s in S} grad p(s) R(S, s) (f(s) - b(S, s)),
    b(S, s) = sum_{s' in S} p(s') R^{s}(S, s') f(s').

sum_s p(s) R(S, s) f(s) is an unbiased estimate of E[f] built from S; b(S, s) is the
same estimate computed as if s had been forced into the set (the rest of S being a
sample without replacement from the other classes), so its expectation given s is
E[f] whatever s is, and the baseline term has mean sum_s grad p(s) E[f] = 0.

Several variables: the k classes of variable j are the top k of its own Gumbel-perturbed
log-probabilities, whose first is the ordinary sample z_j; the other variables stay at
the joint sample z (independent of variable j's noise), so the rule above applies to
f(z_-j, .) variable by variable: d (k - 1) + 1 evaluations of f per draw. With k = K
the gradient is exact (given the other variables). k >= 2: the baseline of s needs at
least one other member of S to estimate the mass outside s (with k = 1 it would be
p(z) f(z), whose expectation is not E[f], and the estimate would be biased).

P^A(T) is computed exactly by the recursion over subsets
P^A(T) = sum_{t in T} P^A(T \\ {t}) p(t) / (mass of the classes outside A and outside
T \\ {t}), a sum of positive terms (2^k k operations per set). Gradients are with
respect to the logits (grad_l p(s) = p(s) (e_s - p)), chained by the family; the
surrogate's value is the mean of f over the S joint samples z.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from stochbp._src import checks
from stochbp._src.estimators.base import Estimator, register_estimator
from stochbp._src.estimators.discrete import flat_logits, logit_view, require_categorical
from stochbp._src.registry import unwrap

_ALTERNATIVES = ("For Bernoulli variables use stochbp.fourier(), stochbp.disarm() or "
                 "stochbp.score_function(baseline='leave_one_out').")


def _subset_tables(k: int):
    """Bit tables of the 2^k subsets of k items, grouped by size."""
    masks = np.arange(2 ** k)
    bits = (masks[:, None] >> np.arange(k)[None, :]) & 1  # (2^k, k)
    sizes = bits.sum(1)
    levels = []
    for size in range(1, k + 1):
        level = masks[sizes == size]
        prev = level[:, None] ^ (1 << np.arange(k))[None, :]  # (n, k)
        levels.append((level, prev, bits[level].astype(bool)))
    full = 2 ** k - 1
    one_out = full ^ (1 << np.arange(k))  # S \ {s}
    two_out = np.array([[full ^ (1 << a) ^ (1 << b) if a != b else full ^ (1 << a)
                         for b in range(k)] for a in range(k)])  # S \ {s, s'}
    return bits, levels, full, one_out, two_out


def set_probabilities(q, outside, sets, k: int):
    """P^{S \\ U}(U) for each bitmask U in ``sets``: the probability that sampling without
    replacement from U and the classes outside S (total mass ``outside``) draws the
    members of U first. ``q`` (k,) holds the probabilities of S's members."""
    bits, levels, _, _, _ = _subset_tables(k)
    mass = jnp.asarray(bits, q.dtype) @ q  # mass of every subset of S
    sets = jnp.asarray(sets)
    P = jnp.zeros(sets.shape + (2 ** k,), q.dtype).at[..., 0].set(1.0)
    for level, prev, has in levels:
        # remaining mass after drawing prev: outside S, plus U's members not in prev
        avail = sets[..., None, None] & ~jnp.asarray(prev)  # (..., n, k)
        den = outside + mass[avail]
        ok = jnp.asarray(has) & (den > 0)
        term = jnp.where(ok, P[..., prev] * q / jnp.where(ok, den, 1.0), 0.0)
        P = P.at[..., level].set(jnp.sum(term, axis=-1))
    return jnp.take_along_axis(P, sets[..., None], axis=-1)[..., 0]


def unordered_set_gradient(p, top, values):
    """ghat (K,) with respect to one variable's logits, from its probabilities p (K,),
    the drawn set ``top`` (k,) and f at each member ``values`` (k,)."""
    k = top.shape[0]
    _, _, full, one_out, two_out = _subset_tables(k)
    q = p[top]
    outside = jnp.sum(jnp.where(jnp.zeros(p.shape, bool).at[top].set(True), 0.0, p))
    probs = set_probabilities(q, outside, np.concatenate(
        [[full], one_out, two_out.reshape(-1)]), k)
    p_S, p_one, p_two = probs[0], probs[1:k + 1], probs[k + 1:].reshape(k, k)
    safe = lambda x: jnp.where(x > 0, x, 1.0)  # noqa: E731
    R = p_one / safe(p_S)                                  # R(S, s)
    R_loo = p_two / safe(p_one)[:, None]                   # R^{s}(S, s'), 1 on the diagonal
    baseline = R_loo @ (q * values)                        # b(S, s)
    weights = q * R * (values - baseline)                  # (k,)
    return jnp.zeros_like(p).at[top].add(weights) - jnp.sum(weights) * p


@register_estimator
class UnorderedSet(Estimator):
    k: int = 2

    @property
    def name(self) -> str:
        return f"unordered_set(k={self.k})"

    def check(self, dist):
        fam = require_categorical("unordered_set()", dist, _ALTERNATIVES)
        num_classes = fam.num_classes(unwrap(dist))
        if self.k > num_classes:
            raise ValueError(f"unordered_set(): k must be at most the number of classes "
                             f"K={num_classes}; got k={self.k}")

    def surrogate(self, f, dist, key, num_samples, state):
        view = logit_view(dist)
        l = lax.stop_gradient(flat_logits(view))
        d, K = l.shape
        k = self.k
        shape = tuple(view.base.batch_shape)
        int_dtype = jax.eval_shape(lambda kk: dist.sample(kk), key).dtype
        p = jax.nn.softmax(l, axis=-1)
        logp = jax.nn.log_softmax(l, axis=-1)

        def one_draw(key):
            g = jax.random.gumbel(key, (d, K), l.dtype)
            _, top = lax.top_k(logp + g, k)  # (d, k), top[:, 0] = the sample
            z = top[:, 0].astype(int_dtype)
            fz = f(z.reshape(shape))
            j = jnp.repeat(jnp.arange(d), k - 1)
            cls = top[:, 1:].reshape(-1).astype(int_dtype)
            others = jax.vmap(lambda jj, c: f(z.at[jj].set(c).reshape(shape)))(j, cls)
            values = jnp.concatenate(
                [jnp.broadcast_to(fz, (d, 1)), others.reshape(d, k - 1)], axis=1)
            values = values.astype(l.dtype)
            ghat = jax.vmap(unordered_set_gradient)(p, top, values)
            return fz, ghat

        fz, ghat = jax.vmap(one_draw)(jax.random.split(key, num_samples))
        value = jnp.mean(fz)
        ghat = lax.stop_gradient(jnp.mean(ghat, axis=0)).reshape(view.logits.shape)
        return value + view.surrogate(ghat, lax.stop_gradient(value)), state


def unordered_set(k: int = 2) -> UnorderedSet:
    """Unordered set estimator with its built-in baseline for Categorical variables:
    k classes per variable drawn without replacement (see the module docstring for the
    equation). Unbiased; d (k - 1) + 1 evaluations of f per draw, f taking class
    indices. ``k`` is an integer from 2 (the baseline needs a second member) to the
    number of classes K (k = K sums over every class of each variable)."""
    k = checks.integer_at_least("unordered_set()", "k", k, 2)
    return UnorderedSet(k=k)

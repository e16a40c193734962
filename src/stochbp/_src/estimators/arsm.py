"""ARSM: augment-REINFORCE-swap-merge (Yin, Yue & Zhou 2019) for Categorical variables.

ARM's generalisation to K classes. Variable j (logits l_j, K classes) is written as
z_j = argmin_c pi_jc exp(-l_jc) with pi_j ~ Dirichlet(1, ..., 1): with pi_j the
normalised Exp(1) variables E_j, E_jc exp(-l_jc) are exponential with rate exp(l_jc),
so the first to arrive is class c with probability softmax(l_j)_c. Differentiating the
exponentials' density and integrating out their sum (a Gamma(K) variable, mean K,
independent of pi) gives the augment-REINFORCE identity

    d E[f(z)] / d l_jc = E[f(z) (1 - K pi_jc)].

Swapping columns c and m of the whole matrix Pi (every variable at once) preserves its
law, which turns that identity into the swap-merge estimator used here:

    ghat_jc = sum_m  D_cm (1/K - pi_jm),
    D_cm    = f(z^{c<->m}) - 1/K sum_i f(z^{i<->m}),

z^{c<->m} being the argmin sample computed from Pi with columns c and m exchanged
(z^{c<->c} = z). The subtracted mean is a baseline whose expectation vanishes. Because
the swap acts on all variables together, each draw costs at most K (K - 1) / 2 + 1
evaluations of f whatever the number of variables, and D = 0 (no update) whenever no
swap changes the sample. Unbiased for any f of class indices.

The gradient is with respect to the logits, chained to the parameters by the family
(log p for a probs-parameterised Categorical, which then reports the same gradient as
fourier() and score_function()); the surrogate's value is the mean of f over the S
draws z.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from stochbp._src.estimators.base import Estimator, register_estimator
from stochbp._src.estimators.discrete import (flat_logits, logit_view, open_uniform,
                                              require_categorical)

_ALTERNATIVES = ("For Bernoulli variables use stochbp.arm() or stochbp.disarm() (ARSM's "
                 "binary case); otherwise stochbp.fourier(), stochbp.pathwise() or "
                 "stochbp.score_function().")


def _pairs(num_classes: int):
    """Index arrays of the unordered pairs c < m, and the (K, K) map from (c, m) to the
    evaluation holding f(z^{c<->m}) (0: no swap, 1 + p: pair p)."""
    pairs = list(itertools.combinations(range(num_classes), 2))
    where = np.zeros((num_classes, num_classes), np.int32)
    for p, (c, m) in enumerate(pairs):
        where[c, m] = where[m, c] = p + 1
    first = np.array([c for c, _ in pairs], np.int32)
    second = np.array([m for _, m in pairs], np.int32)
    return first, second, where


@register_estimator
class ARSM(Estimator):
    @property
    def name(self) -> str:
        return "arsm"

    def check(self, dist):
        require_categorical("arsm()", dist, _ALTERNATIVES)

    def _one_draw(self, f, l, shape, int_dtype, key):
        """(f(z), ghat with respect to the flat logits (d, K)) for one draw of Pi."""
        d, K = l.shape
        pi = -jnp.log(open_uniform(key, (d, K), l.dtype))  # Exp(1)
        pi = pi / jnp.sum(pi, axis=-1, keepdims=True)      # Dirichlet(1)
        score = jnp.log(pi) - l                            # argmin: the sample
        first, second, where = _pairs(K)
        swapped = jnp.broadcast_to(score, (len(first),) + score.shape)
        rows = jnp.arange(len(first))
        # z^{c<->m}: exchange pi's columns c and m, keep the logits in place
        swapped = swapped.at[rows, :, first].set((jnp.log(pi[:, second]) - l[:, first]).T)
        swapped = swapped.at[rows, :, second].set((jnp.log(pi[:, first]) - l[:, second]).T)
        z = jnp.argmin(score, axis=-1).astype(int_dtype)
        z_swapped = jnp.argmin(swapped, axis=-1).astype(int_dtype)  # (P, d)
        values = jax.vmap(lambda x: f(x.reshape(shape)))(
            jnp.concatenate([z[None], z_swapped]))  # (1 + P,)
        F = values[where]  # F[c, m] = f(z^{c<->m})
        D = F - jnp.mean(F, axis=0, keepdims=True)
        ghat = (1.0 / K - pi) @ D.T  # ghat[j, c] = sum_m D[c, m] (1/K - pi[j, m])
        return values[0], ghat

    def surrogate(self, f, dist, key, num_samples, state):
        view = logit_view(dist)
        l = lax.stop_gradient(flat_logits(view))
        shape = tuple(view.base.batch_shape)
        int_dtype = jax.eval_shape(lambda k: dist.sample(k), key).dtype
        keys = jax.random.split(key, num_samples)
        fz, ghat = jax.vmap(lambda k: self._one_draw(f, l, shape, int_dtype, k))(keys)
        value = jnp.mean(fz)
        ghat = lax.stop_gradient(jnp.mean(ghat, axis=0).astype(l.dtype))
        ghat = ghat.reshape(view.logits.shape)
        return value + view.surrogate(ghat, lax.stop_gradient(value)), state


def arsm() -> ARSM:
    """Augment-REINFORCE-swap-merge gradients for Categorical variables (see the
    module docstring for the equation).

    Unbiased; at most K (K - 1) / 2 + 1 evaluations of f per draw (``num_samples``
    draws), f taking class indices. For Bernoulli variables use :func:`arm` or
    :func:`disarm`.
    """
    return ARSM()

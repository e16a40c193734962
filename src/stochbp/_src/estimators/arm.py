"""ARM (Yin & Zhou 2019) and DisARM (Dong, Mnih & Tucker 2020) for Bernoulli variables.

Both draw u ~ U(0, 1)^d and evaluate f at an antithetic pair of binary vectors, each
marginally distributed as z:

    b = 1[u < sigmoid(l)],    b~ = 1[u > sigmoid(-l)]  (= 1[1 - u < sigmoid(l)]).

With l the logits, the estimates of grad_l E[f(z)] are, coordinate by coordinate,

    ARM:     (f(b~) - f(b)) (u_j - 1/2),
    DisARM:  1/2 (f(b) - f(b~)) (-1)^{b~_j} 1[b_j != b~_j] sigmoid(|l_j|),

DisARM being ARM with the augmentation integrated out (never higher variance). The
gradient is taken with respect to the **logits**; for a probs-parameterised Bernoulli it
is chained through l = log p - log(1 - p) (so p must lie strictly inside (0, 1)). The
surrogate's value is the mean of f over both members of each of the S pairs. With
``stochbp.per_example`` each row uses its own term's difference as its signal.
For Categorical variables use their analogue, :func:`stochbp.arsm`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from stochbp._src import series, structure
from stochbp._src.estimators.base import Estimator, register_estimator, require_logits
from stochbp._src.estimators.discrete import logit_view, open_uniform


@register_estimator
class ARM(Estimator):
    disarm: bool = False

    @property
    def name(self) -> str:
        return "disarm" if self.disarm else "arm"

    def check(self, dist):
        require_logits(f"{self.name}()", dist, binary_only=True,
                       alternatives="ARM and DisARM are defined for binary variables; "
                         "for a Categorical use stochbp.arsm() (their categorical "
                         "analogue), stochbp.fourier(), stochbp.rebar(), "
                       "stochbp.relax(), stochbp.gumbel_softmax() or "
                       "stochbp.score_function().")

    def surrogate(self, f, dist, key, num_samples, state):
        view = logit_view(dist)
        l = lax.stop_gradient(view.logits)
        u = open_uniform(key, (num_samples,) + l.shape, l.dtype)
        b = (u < jax.nn.sigmoid(l)).astype(jnp.int32)
        b_anti = (u > jax.nn.sigmoid(-l)).astype(jnp.int32)
        rows = jax.vmap(lambda z: structure.row_values(f, z))
        f_b, f_anti = rows(b), rows(b_anti)  # (S,) or (S, n)
        total = lambda v: jnp.sum(v.reshape(num_samples, -1), axis=1)  # noqa: E731
        value = 0.5 * jnp.mean(total(f_b) + total(f_anti))
        diff = lax.stop_gradient(f_anti - f_b)  # (S,) or, per example, (S, n)
        diff = diff.reshape(diff.shape + (1,) * (u.ndim - diff.ndim))
        if self.disarm:
            differ = (b != b_anti).astype(l.dtype)
            sign = 1 - 2 * b_anti.astype(l.dtype)
            ghat = -0.5 * diff * sign * differ * jax.nn.sigmoid(jnp.abs(l))
        else:
            ghat = diff * (u - 0.5)
        return value + series.zero_valued(view.logits, jnp.mean(ghat, axis=0)), state


def arm() -> ARM:
    """Augment-REINFORCE-merge gradient for Bernoulli variables (see the module docstring).

    Unbiased; two evaluations of f per sample (``num_samples`` antithetic pairs).
    """
    return ARM(disarm=False)


def disarm() -> ARM:
    """DisARM: ARM with the augmentation integrated out (see the module docstring).

    Unbiased, variance never above ARM's; two evaluations of f per sample.
    """
    return ARM(disarm=True)

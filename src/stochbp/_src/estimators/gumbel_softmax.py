"""Gumbel-softmax / Concrete relaxation (Jang et al. 2016; Maddison et al. 2016).

Categorical: y = softmax((l + G) / tau) with G standard Gumbel noise; Bernoulli (the
binary Concrete): y = sigmoid((l + L) / tau) with L standard logistic noise. f is
evaluated on the relaxed y and differentiated pathwise. This is a *biased* estimator of
grad E[f(z)]: it is the exact gradient of E[f(y)], a different objective, and the two
differ even for linear f, because the relaxed mean is pulled towards the centre of the
simplex (E[y] != p unless p = 1/2 for a Bernoulli). For f(z) = z and a Bernoulli with
p = 0.3 the true gradient with respect to p is 1, the relaxed one 0.74 at tau = 1,
0.91 at tau = 0.5 and 0.996 at tau = 0.1 (computed by quadrature; tested). The bias
shrinks as tau -> 0 while the variance grows. With straight_through=True the forward
pass uses the hard sample (so the value is an unbiased Monte Carlo mean of f) and the
gradient is still the relaxed one -- also biased.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from stochbp._src import checks, structure
from stochbp._src.estimators.base import Estimator, register_estimator, require_logits
from stochbp._src.estimators.discrete import logit_view


@register_estimator
class GumbelSoftmax(Estimator):
    temperature: float = 1.0
    straight_through: bool = False

    @property
    def name(self) -> str:
        st = ", straight_through=True" if self.straight_through else ""
        return f"gumbel_softmax(temperature={self.temperature:g}{st})"

    def check(self, dist):
        require_logits("gumbel_softmax()", dist)

    def surrogate(self, f, dist, key, num_samples, state):
        view = logit_view(dist)
        categorical = view.categorical
        if categorical:
            structure.require_one_hot("gumbel_softmax()", f)
            structure.check_num_classes("gumbel_softmax()", f, view.num_classes)
        logits = view.logits
        shape = (num_samples,) + logits.shape
        if categorical:
            x = logits + jax.random.gumbel(key, shape, logits.dtype)
            y = jax.nn.softmax(x / self.temperature, axis=-1)
            hard = jax.nn.one_hot(jnp.argmax(x, axis=-1), logits.shape[-1], dtype=y.dtype)
        else:
            x = logits + jax.random.logistic(key, shape, logits.dtype)
            y = jax.nn.sigmoid(x / self.temperature)
            hard = (x > 0).astype(y.dtype)
        if self.straight_through:
            y = y + lax.stop_gradient(hard - y)
        total = lambda v: jnp.sum(structure.row_values(f, v, one_hot=categorical))  # noqa
        return jnp.mean(jax.vmap(total)(y)), state


def gumbel_softmax(temperature, straight_through: bool = False) -> GumbelSoftmax:
    """Gumbel-softmax (Concrete) relaxation; **biased** (see the module docstring).

    Args:
      temperature: tau > 0 of the relaxation. Small tau: small bias, large variance.
      straight_through: feed f the hard sample in the forward pass and use the relaxed
        gradient in the backward pass (also biased).

    f receives relaxed samples, so it must accept continuous values: floats in (0, 1) of
    the batch shape for a Bernoulli; for a Categorical, rows on the simplex of shape
    batch_shape + (K,), so f must be declared with ``stochbp.one_hot(h, K)`` or
    ``stochbp.linear(g, A, b)`` with A of shape (m, d, K) (or a ``stochbp.per_example``
    of those). The surrogate's value is the mean of f at the relaxed samples (at the hard
    samples with straight_through). Gradients are with respect to the logits, chained to
    probs through logits = log p - log(1 - p) (Bernoulli) or log p (Categorical).
    """
    temperature = checks.positive_number("gumbel_softmax()", "temperature", temperature)
    straight_through = checks.boolean("gumbel_softmax()", "straight_through", straight_through)
    return GumbelSoftmax(temperature=temperature, straight_through=straight_through)

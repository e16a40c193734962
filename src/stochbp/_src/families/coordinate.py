"""Families of independent scalar coordinates whose rule is a cumulant series."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from stochbp._src import checks, series
from stochbp._src.families.base import Family, require_order


class CoordinateFamily(Family):
    """A family whose coordinates are independent with known cumulant coefficients.

    Subclasses give ``coefficients(d, order)``: c_{n,j} for n = 1..order, shape
    (order, *batch_shape), the Taylor coefficients of each coordinate's CGF. A finite
    rule sets ``max_order`` (the last non-zero coefficient); a series rule sets
    ``series = True`` and needs ``order``.
    """

    max_order: Optional[int] = None

    def coefficients(self, d, order: int) -> jax.Array:
        raise NotImplementedError

    def effective_order(self, order: Optional[int]) -> int:
        if self.series:
            return require_order(self, order)
        if order is None:
            return self.max_order
        return min(checks.positive_int("fourier()", "order", order), self.max_order)

    def sample(self, d, key, num_samples: int):
        return jax.lax.stop_gradient(d.sample(key, (num_samples,)))

    def fourier(self, f, d, key, num_samples, order):
        n = self.effective_order(order)
        return series.series_surrogate(f, self.sample(d, key, num_samples),
                                       self.coefficients(d, n))


def stack_orders(terms, batch_shape) -> jax.Array:
    """Stack per-order coefficient arrays, broadcasting each to the batch shape."""
    return jnp.stack([jnp.broadcast_to(t, batch_shape) for t in terms])

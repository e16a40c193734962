"""Families of independent scalar coordinates whose rule is a cumulant series."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from stochbp._src import checks, series
from stochbp._src.families.base import Family, require_order


class CoordinateFamily(Family):
    """A family whose coordinates are independent with known cumulant coefficients.

    Theorem 1 needs c_{n,j}, n = 1..order: the Taylor coefficients K_j^(n)(0) / n! of
    each coordinate's cumulant generating function K_j(t) = log E[exp(t z_j)]. A
    subclass gives either ``coefficients(d, order)`` (closed form, shape
    (order, *batch_shape)) or only ``cgf(d, t)``, in which case the coefficients are
    found by Taylor mode at t = 0 (write the CGF in JAX; lgamma and digamma are fine).
    A finite rule sets ``max_order`` (the last non-zero coefficient); a series rule sets
    ``series = True`` and needs ``order``.
    """

    max_order: Optional[int] = None

    def coefficients(self, d, order: int) -> jax.Array:
        if not self.has_cgf():
            raise NotImplementedError(f"{self.name}: a CoordinateFamily needs "
                                      "coefficients(d, order) or cgf(d, t)")
        dtype = jnp.result_type(float)
        cgf = lambda t: jnp.broadcast_to(self.cgf(d, t), d.batch_shape)  # noqa: E731
        return series.coefficients_from_cgf(cgf, jnp.zeros((), dtype), order)

    def needs_order(self) -> bool:
        return self.series or self.max_order is None

    def effective_order(self, order: Optional[int]) -> int:
        if self.needs_order():
            return require_order(self, order)
        if order is None:
            return self.max_order
        return min(checks.positive_int("fourier()", "order", order), self.max_order)

    def fourier_derivative_order(self, order: Optional[int]) -> int:
        return 0 if self.discrete else self.effective_order(order)

    def log_coefficients(self, d, order: int):
        """Optional: (l_n, s_n) for n = 2..order with c_n = s_n exp(l_n), s_n in {0, 1},
        shape (order - 1, *batch_shape) each, for families whose coefficients grow like
        a scale to the power n; the rule is then computed in log space and cannot
        overflow where the result is finite (:func:`series.scaled_series_surrogate`).
        Return None to use ``coefficients``."""
        return None

    def fourier(self, f, d, key, num_samples, order):
        n = self.effective_order(order)
        samples = self.sample(d, key, num_samples)
        logs = self.log_coefficients(d, n) if n >= 2 else None
        if logs is None:
            return series.series_surrogate(f, samples, self.coefficients(d, n))
        log_rest, sign_rest = logs
        return series.scaled_series_surrogate(f, samples, self.coefficients(d, 1),
                                              log_rest, sign_rest)


def stack_orders(terms, batch_shape) -> jax.Array:
    """Stack per-order coefficient arrays, broadcasting each to the batch shape."""
    return jnp.stack([jnp.broadcast_to(t, batch_shape) for t in terms])

"""Score-function (REINFORCE) gradients with optional baselines.

grad E[f(z)] = E[(f(z) - b) grad log p_theta(z)], unbiased for any b independent of z.
With a per-row declaration (``per_example`` / ``row_terms``) row i's score is weighted by
its own term only (the other rows' terms are independent of row i's draw, so dropping
them keeps the estimate unbiased). Baselines: a constant; "leave_one_out" (b_s = mean of
the other S-1 draws' f, per row with a per-row declaration, needs S >= 2);
"moving_average" (an exponential average of past mean values of f -- of the mean row
term with a per-row declaration -- kept in a state threaded through
:func:`stochbp.expectation_with_state`).
"""
from __future__ import annotations

import numbers
from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp
from jax import lax

from stochbp._src import checks, structure
from stochbp._src.estimators.base import (Estimator, draw, register_estimator,
                                          stateful_error, unsupported)
from stochbp._src.registry import family_of

BASELINES = ("moving_average", "leave_one_out")
_TINY = 1e-12  # floor of the bias-correction denominator 1 - decay^count


class MovingAverageState(NamedTuple):
    """State of ``score_function(baseline="moving_average")`` (a pytree)."""

    average: jax.Array  # exponential average of past means of f (not bias-corrected)
    count: jax.Array  # number of updates so far


@register_estimator
class ScoreFunction(Estimator):
    baseline: Union[None, str, float] = None
    decay: float = 0.9
    bias_correction: bool = True

    @property
    def name(self) -> str:
        return "score_function" if self.baseline is None else \
            f"score_function(baseline={self.baseline!r})"

    @property
    def _moving(self) -> bool:
        return self.baseline == "moving_average"

    def init(self, f, dist, key):
        """``MovingAverageState`` for the moving-average baseline, else empty."""
        if not self._moving:
            return super().init(f, dist, key)
        return MovingAverageState(jnp.zeros(()), jnp.zeros((), jnp.int32))

    def check_state(self, state):
        if not self._moving:
            return super().check_state(state)
        if not isinstance(state, MovingAverageState):
            raise stateful_error(self, state, MovingAverageState)

    def check(self, dist):
        fam = family_of(dist)
        if fam is not None and not fam.has_density:
            raise unsupported("score_function()", dist,
                              "a Dirac delta has no density with respect to a "
                              "parameter-free measure, so its score does not exist",
                              "Use stochbp.fourier() (Eq. 16) or stochbp.pathwise().")

    def min_samples(self, dist):
        """Two draws for the leave-one-out baseline (each draw's baseline is the other
        draws' mean), one otherwise."""
        return 2 if self.baseline == "leave_one_out" else 1

    def surrogate(self, f, dist, key, num_samples, state):
        fam = family_of(dist)
        z = draw(dist, key, num_samples)
        if structure.has_rows(f):
            # row i's score is weighted by its own term only (the others are
            # independent of row i and have zero-mean products with its score)
            fz = jax.vmap(lambda x: structure.row_values(f, x))(z)  # (S, n)
            logp = dist.log_prob(z)
            logp = logp.reshape(logp.shape[:2] + (-1,)).sum(axis=2)  # (S, n)
        else:
            fz = jax.vmap(f)(z)
            logp = dist.log_prob(z).reshape(num_samples, -1).sum(axis=1)
        if self.baseline is None:
            b = jnp.zeros_like(fz)
        elif self.baseline == "leave_one_out":
            if num_samples < 2:
                raise ValueError("score_function(baseline='leave_one_out') needs "
                                 f"num_samples >= 2; got num_samples={num_samples}")
            b = (jnp.sum(fz, axis=0) - fz) / (num_samples - 1)
        elif self._moving:
            self.check_state(state)
            avg, count = state
            if self.bias_correction:  # the average started at 0: divide by 1 - decay^t
                avg_b = avg / jnp.maximum(1.0 - self.decay ** count, _TINY)
            else:
                avg_b = avg
            b = jnp.where(count > 0, avg_b, 0.0).astype(fz.dtype) * jnp.ones_like(fz)
            new_avg = self.decay * avg + (1 - self.decay) * lax.stop_gradient(jnp.mean(fz))
            state = MovingAverageState(new_avg, count + 1)
        else:
            b = jnp.full_like(fz, self.baseline)
        weights = lax.stop_gradient(fz - b)
        correction = jnp.sum(weights * (logp - lax.stop_gradient(logp))) / num_samples
        if self.baseline is not None and fam is not None:
            # the baseline's term -b * score has mean -b * E[score]; add it back, which
            # is zero for a normalised density (Categorical by probs is not)
            full = tuple(dist.batch_shape) + tuple(dist.event_shape)
            bbar = lax.stop_gradient(jnp.mean(b, axis=0))  # () or (n,) per row
            bbar = bbar.reshape(bbar.shape + (1,) * (len(full) - bbar.ndim))
            correction = correction + fam.score_mean(dist, bbar)
        return jnp.sum(fz) / num_samples + correction, state


def score_function(baseline: Union[None, str, float] = None, *, decay: float = 0.9,
                   bias_correction: bool = True) -> ScoreFunction:
    """Score-function estimator; ``baseline`` is None, a number, "leave_one_out" or
    "moving_average": b_t = a_t / (1 - decay^t) with a_t = decay a_{t-1} + (1 - decay)
    mean f (``decay`` in (0, 1)); ``bias_correction=False`` uses a_t itself, which
    starts near 0 (as some libraries do). Unbiased in every case: b never depends on
    the current draw."""
    if baseline is not None and not isinstance(baseline, numbers.Real) \
            and baseline not in BASELINES:
        raise ValueError(f"score_function(): baseline must be None, a number, "
                         f"'moving_average' or 'leave_one_out'; got baseline={baseline!r}")
    if isinstance(baseline, bool):
        raise ValueError(f"score_function(): baseline must not be a bool; got {baseline!r}")
    if isinstance(baseline, numbers.Real):
        baseline = checks.finite_number("score_function()", "baseline", baseline)
    if not (isinstance(decay, numbers.Real) and 0.0 < decay < 1.0):
        raise ValueError(f"score_function(): decay must be in (0, 1); got decay={decay!r}")
    bias_correction = checks.boolean("score_function()", "bias_correction", bias_correction)
    return ScoreFunction(baseline=baseline, decay=float(decay),
                         bias_correction=bias_correction)

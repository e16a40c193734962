"""Statistics of a gradient estimator: mean, variance, standard error, bias checks.

For a parameter pytree theta, a distribution constructor ``make_dist(theta)`` and an
estimator, draws R independent gradient estimates g_r = grad_theta expectation(...)
(one key each) and reports, elementwise over theta,
    mean = (1/R) sum g_r,  variance = sample variance of g_r,  stderr = sqrt(variance/R).
:func:`check_unbiased` compares the mean with a reference gradient (an exact
closed-form gradient, or the gradient of a closed-form expectation) and passes when
|mean - reference| <= num_sigmas * stderr + atol + rtol * |reference| everywhere.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from stochbp._src import checks
from stochbp._src.core import expectation_with_state


@dataclasses.dataclass(frozen=True)
class GradientStats:
    """Elementwise moments of R gradient estimates (pytrees shaped like theta)."""

    mean: Any
    variance: Any
    stderr: Any
    num_draws: int

    @property
    def total_variance(self) -> float:
        """Sum of the per-element variances (the trace of the covariance)."""
        return float(sum(jnp.sum(v) for v in jax.tree_util.tree_leaves(self.variance)))


@dataclasses.dataclass(frozen=True)
class UnbiasedCheck:
    passed: bool
    max_z: float  # largest |mean - reference| / stderr over all elements
    stats: GradientStats
    reference: Any
    message: str

    def __bool__(self) -> bool:
        return self.passed


def gradient_estimates(f: Callable, make_dist: Callable, theta: Any, key, *, estimator,
                       num_samples: int = 1, num_draws: int = 1000,
                       batch_size: Optional[int] = 256, state: Any = None) -> Any:
    """R = num_draws independent gradient estimates, stacked on a leading axis.

    ``state`` is the estimator's state, held fixed over the draws (default:
    ``estimator.init(f, make_dist(theta), key)``)."""
    checks.positive_int("gradient_estimates()", "num_draws", num_draws)
    if state is None:
        state = estimator.init(f, make_dist(theta), key)
    # Validate once, eagerly, so bad input fails with a clear message.
    expectation_with_state(f, make_dist(theta), key, state, estimator=estimator,
                           num_samples=num_samples)

    def one(k):
        return jax.grad(lambda th: expectation_with_state(
            f, make_dist(th), k, state, estimator=estimator,
            num_samples=num_samples)[0])(theta)

    keys = jax.random.split(key, num_draws)
    return jax.jit(lambda ks: jax.lax.map(one, ks, batch_size=batch_size))(keys)


def gradient_stats(f: Callable, make_dist: Callable, theta: Any, key, *, estimator,
                   num_samples: int = 1, num_draws: int = 1000,
                   batch_size: Optional[int] = 256, state: Any = None) -> GradientStats:
    """Mean, variance and standard error of the estimator's gradient at theta."""
    draws = gradient_estimates(f, make_dist, theta, key, estimator=estimator,
                               num_samples=num_samples, num_draws=num_draws,
                               batch_size=batch_size, state=state)
    mean = jax.tree_util.tree_map(lambda g: jnp.mean(g, 0), draws)
    var = jax.tree_util.tree_map(lambda g: jnp.var(g, 0, ddof=1), draws)
    se = jax.tree_util.tree_map(lambda v: jnp.sqrt(v / num_draws), var)
    return GradientStats(mean, var, se, num_draws)


def reference_gradient(exact: Callable, theta: Any) -> Any:
    """Gradient of a closed-form expectation ``exact(theta)``."""
    return jax.grad(exact)(theta)


def check_unbiased(f: Callable, make_dist: Callable, theta: Any, key, *, estimator,
                   reference: Any, num_samples: int = 1, num_draws: int = 1000,
                   num_sigmas: float = 4.0, rtol: float = 1e-6, atol: float = 1e-9,
                   batch_size: Optional[int] = 256, state: Any = None) -> UnbiasedCheck:
    """Is the estimator's mean gradient within ``num_sigmas`` standard errors of
    ``reference``? ``reference`` is a pytree like theta, or a callable exact(theta)
    whose gradient is taken. rtol/atol absorb rounding where the variance is zero."""
    if callable(reference):
        reference = reference_gradient(reference, theta)
    stats = gradient_stats(f, make_dist, theta, key, estimator=estimator,
                           num_samples=num_samples, num_draws=num_draws,
                           batch_size=batch_size, state=state)
    leaves_m = jax.tree_util.tree_leaves(stats.mean)
    leaves_s = jax.tree_util.tree_leaves(stats.stderr)
    leaves_r = jax.tree_util.tree_leaves(reference)
    if len(leaves_r) != len(leaves_m):
        raise ValueError("check_unbiased(): reference must have the structure of theta")
    passed, max_z, worst = True, 0.0, ""
    for i, (m, s, r) in enumerate(zip(leaves_m, leaves_s, leaves_r)):
        m, s, r = (np.asarray(x, dtype=np.float64) for x in (m, s, r))
        r = np.broadcast_to(r, m.shape)
        err = np.abs(m - r)
        tol = num_sigmas * s + atol + rtol * np.abs(r)
        # z-scores only where the estimator really varies (exact rules have ~0 variance)
        noisy = s > atol + rtol * np.abs(r)
        z = np.where(noisy, err / np.where(noisy, s, 1.0), 0.0)
        if z.size and z.max() > max_z:
            max_z = float(z.max())
        if np.any(err > tol):
            passed = False
            j = np.unravel_index(np.argmax(err - tol), err.shape)
            worst = (f"leaf {i} element {tuple(int(x) for x in j)}: mean {m[j]:.6g}, "
                     f"reference {r[j]:.6g}, stderr {s[j]:.3g}")
    msg = (f"{estimator.name}: " + ("unbiased within tolerance" if passed else
           f"BIASED beyond {num_sigmas} standard errors; worst {worst}") +
           f" (max |z| = {max_z:.2f}, {stats.num_draws} draws)")
    return UnbiasedCheck(passed, max_z, stats, reference, msg)

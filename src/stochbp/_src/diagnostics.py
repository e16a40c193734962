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
import time
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
    # Validate once, before the draws, so bad input fails with a clear message. The
    # distribution is built eagerly (its parameters stay concrete, so the checks read
    # their values) and the call is only traced, not run op by op (which cost seconds
    # of dispatch for a vmapped estimator).
    dist = make_dist(theta)
    jax.eval_shape(lambda k: expectation_with_state(f, dist, k, state, estimator=estimator,
                                                    num_samples=num_samples), key)

    def one(k):
        return jax.grad(lambda th: expectation_with_state(
            f, make_dist(th), k, state, estimator=estimator,
            num_samples=num_samples)[0])(theta)

    keys = jax.random.split(key, num_draws)
    if batch_size is None or num_draws % batch_size == 0:
        return jax.jit(lambda ks: jax.lax.map(one, ks, batch_size=batch_size))(keys)
    # Pad to whole batches so that lax.map compiles the estimator once (a ragged last
    # batch would be a second program); the extra draws are dropped.
    padded = -(-num_draws // batch_size) * batch_size
    keys = jnp.concatenate([keys, jax.random.split(jax.random.fold_in(key, 1),
                                                   padded - num_draws)])
    draws = jax.jit(lambda ks: jax.lax.map(one, ks, batch_size=batch_size))(keys)
    return jax.tree_util.tree_map(lambda g: g[:num_draws], draws)


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


# ------------------------------------------------------------------ choosing by measurement
@dataclasses.dataclass(frozen=True)
class ComparisonRow:
    """One estimator on one parameter block (a leaf of theta)."""

    estimator: str
    block: str
    mean: np.ndarray  # elementwise mean of the gradient estimates
    stderr: np.ndarray
    variance: float  # summed over the block's elements (trace of its covariance)
    seconds: float  # median wall time of one jitted gradient call
    max_z: Optional[float]  # largest |mean - reference| / stderr (None: no reference)

    @property
    def variance_time(self) -> float:
        """Work-normalised variance: variance x time per call (lower is better)."""
        return self.variance * self.seconds


@dataclasses.dataclass(frozen=True)
class Comparison:
    rows: tuple

    def table(self) -> str:
        """A Markdown table: per block, estimators sorted by variance x time."""
        head = ("| block | estimator | variance | time per call | variance × time | "
                "max \\|z\\| vs reference |\n|---|---|---|---|---|---|")
        lines = [head]
        for block in dict.fromkeys(r.block for r in self.rows):
            for r in sorted((r for r in self.rows if r.block == block),
                            key=lambda r: r.variance_time):
                z = "–" if r.max_z is None else f"{r.max_z:.2f}"
                lines.append(f"| {r.block} | {r.estimator} | {r.variance:.4g} | "
                             f"{r.seconds * 1e3:.3g} ms | {r.variance_time:.4g} | {z} |")
        return "\n".join(lines)

    def best(self, block: Optional[str] = None) -> str:
        """The estimator with the lowest variance x time summed over blocks (or in one)."""
        totals: dict = {}
        for r in self.rows:
            if block is None or r.block == block:
                totals[r.estimator] = totals.get(r.estimator, 0.0) + r.variance_time
        return min(totals, key=totals.get)

    def plot(self, path: str) -> None:
        """Bar charts of variance and variance x time per block (needs matplotlib)."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ImportError("Comparison.plot() needs matplotlib: pip install "
                              "'stochbp[experiments]'") from err
        blocks = list(dict.fromkeys(r.block for r in self.rows))
        names = list(dict.fromkeys(r.estimator for r in self.rows))
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            rows = {r.block: r for r in self.rows if r.estimator == name}
            xs = np.arange(len(blocks)) + i * width
            for ax, value in zip(axes, ("variance", "variance_time")):
                ax.bar(xs, [getattr(rows[b], value) if b in rows else np.nan
                            for b in blocks], width, label=name)
        for ax, title in zip(axes, ("gradient variance", "variance × seconds per call")):
            ax.set_yscale("log")
            ax.set_xticks(np.arange(len(blocks)) + 0.4 - width / 2)
            ax.set_xticklabels(blocks)
            ax.set_title(title)
        axes[0].legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    def __str__(self) -> str:
        return self.table()


def _block_names(theta) -> list:
    def part(entry):
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                return str(getattr(entry, attr))
        return str(entry)
    paths = jax.tree_util.tree_flatten_with_path(theta)[0]
    return [".".join(part(e) for e in p) or "theta" for p, _ in paths]


def _seconds_per_call(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compare(f: Callable, make_dist: Callable, theta: Any, key, estimators, *,
            num_samples: int = 1, num_draws: int = 1000, reference: Any = None,
            timing_repeats: int = 20, batch_size: Optional[int] = 256) -> Comparison:
    """Run several estimators on one problem and measure what choosing needs.

    For each estimator (a dict name -> estimator, or a sequence named by ``.name``) and
    each leaf ("block") of theta: the mean, standard error and total variance of
    ``num_draws`` gradient estimates (``num_samples`` draws each, all estimators on the
    same keys), the median time of one jitted gradient call, and variance x time, the
    variance an equal compute budget buys (lower is better). With ``reference`` (a
    gradient pytree or a closed-form ``exact(theta)``) each row also gets the largest
    |mean - reference| / stderr. ``print(result)`` shows the table; ``result.best()``
    names the cheapest estimator at equal variance; ``result.plot(path)`` saves bars.
    """
    if isinstance(estimators, dict):
        named = list(estimators.items())
    else:
        named = [(e.name, e) for e in estimators]
    if not named:
        raise ValueError("compare(): estimators must name at least one estimator; got "
                         f"estimators={estimators!r}")
    if callable(reference):
        reference = reference_gradient(reference, theta)
    timing_repeats = checks.positive_int("compare()", "timing_repeats", timing_repeats)
    blocks = _block_names(theta)
    rows = []
    for name, est in named:
        stats = gradient_stats(f, make_dist, theta, key, estimator=est,
                               num_samples=num_samples, num_draws=num_draws,
                               batch_size=batch_size)
        state = est.init(f, make_dist(theta), key)
        one = jax.jit(jax.grad(lambda th, k: expectation_with_state(
            f, make_dist(th), k, state, estimator=est, num_samples=num_samples)[0]))
        seconds = _seconds_per_call(one, theta, key, repeats=timing_repeats)
        refs = [None] * len(blocks) if reference is None else \
            jax.tree_util.tree_leaves(reference)
        for block, m, v, s, r in zip(blocks, jax.tree_util.tree_leaves(stats.mean),
                                     jax.tree_util.tree_leaves(stats.variance),
                                     jax.tree_util.tree_leaves(stats.stderr), refs):
            m, s = np.asarray(m, np.float64), np.asarray(s, np.float64)
            max_z = None
            if r is not None:
                err = np.abs(m - np.broadcast_to(np.asarray(r, np.float64), m.shape))
                max_z = float(np.max(np.where(s > 0, err / np.where(s > 0, s, 1), 0)))
            rows.append(ComparisonRow(name, block, m, s, float(np.sum(v)), seconds, max_z))
    return Comparison(tuple(rows))

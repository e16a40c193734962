"""`stochbp demo`: every estimator of the library beside the exact gradient.

Each case is a small problem whose expectation has a closed form or a finite sum:
theta, a distribution ``make_dist(theta)``, f, and ``exact(theta) = E[f(z)]``, so the
exact gradient is ``jax.grad(exact)(theta)``. For each estimator that applies to the
case, the mean and standard error of its gradient over many independent keys are
printed under the exact gradient, with z = max |mean - exact| / standard error: an
unbiased estimator gives |z| below about 4. Rules that are exact for the case (Eq. 15
for a Gaussian, Eq. 16 for a Dirac, the Fourier series at order 2 for a quadratic f)
still vary from key to key, because the samples at which f's derivatives are taken
are random; "exact" means no truncation bias. Gumbel-softmax is biased by design (it
differentiates the relaxed objective), and the truncated Beta and Dirichlet series
are biased because those series diverge: the demo says so beside them.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd

import stochbp

C = 0.3
EULER = 0.5772156649015329
# estimators biased by design: their rows say so instead of flagging the bias
BIASED_BY_DESIGN = {"gumbel_softmax": "biased by design (relaxed objective)"}


@dataclasses.dataclass
class Case:
    name: str
    make_dist: Callable
    theta: dict
    f: Callable
    exact: Callable  # closed-form E[f] as a function of theta
    estimators: list
    note: str = ""


def _sq(z):
    return jnp.sum((z - C) ** 2)


def _gumbel_cgf(d, t):
    """log E[exp(t z)] of Gumbel(loc, scale): loc t + log Gamma(1 - scale t)."""
    return d.loc * t + jax.scipy.special.gammaln(1.0 - d.scale * t)


def cases() -> list[Case]:
    fo, sf = stochbp.fourier, stochbp.score_function
    pw = stochbp.pathwise()
    bern_w = jnp.array([0.7, -1.3])
    cat_v = jnp.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.7]])

    def bern_f(z):  # also defined on relaxed z in [0, 1] (gumbel_softmax, rebar, relax)
        z = z.astype(jnp.result_type(float))
        return jnp.sin(z @ bern_w) + z[0] * z[1]

    def bern_exact(t):
        p = t["probs"]
        states = jnp.array([[0, 0], [0, 1], [1, 0], [1, 1]])
        w = jnp.prod(jnp.where(states == 1, p, 1 - p), axis=1)
        return jnp.sum(w * jax.vmap(bern_f)(states))

    def cat_h(rows):  # rows: (2, 3) one-hot (or relaxed) rows
        v = jnp.sum(rows * cat_v, axis=1)
        return jnp.sin(v[0] * v[1]) + v[0]

    cat_f = stochbp.one_hot(cat_h, 3)

    def cat_exact(t):
        p = t["probs"]
        grid = jnp.array([[a, b] for a in range(3) for b in range(3)])
        w = p[0, grid[:, 0]] * p[1, grid[:, 1]]
        return jnp.sum(w * jax.vmap(lambda z: cat_h(jax.nn.one_hot(z, 3)))(grid))

    a_vec = jnp.array([0.3, -0.2])

    def mvn_exact(t):
        L = jnp.tril(t["scale_tril"])
        return jnp.exp(a_vec @ t["loc"] + 0.5 * a_vec @ L @ L.T @ a_vec)

    def beta_exact(t):
        a, b = t["alpha"], t["beta"]
        m, v = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
        return jnp.sum((m - C) ** 2 + v)

    def dir_exact(t):
        a = t["alpha"]
        a0 = a.sum()
        return a[0] * (a[0] + 1) / (a0 * (a0 + 1)) + a[1] / a0

    def gumbel_exact(t):
        mean = t["loc"] + EULER * t["scale"]
        return jnp.sum((mean - C) ** 2 + (jnp.pi * t["scale"]) ** 2 / 6)

    def mixture_exact(t):  # E cos z = sum_k w_k cos(mu_k) exp(-sigma_k^2 / 2)
        w = jax.nn.softmax(t["logits"])
        return jnp.sum(w * jnp.cos(t["loc"]) * jnp.exp(-t["scale"] ** 2 / 2))

    cos = lambda z: jnp.sum(jnp.cos(z))  # noqa: E731
    return [
        Case("Normal", lambda t: nd.Normal(t["loc"], t["scale"]),
             {"loc": jnp.array([0.5]), "scale": jnp.array([1.2])}, cos,
             lambda t: jnp.sum(jnp.cos(t["loc"]) * jnp.exp(-t["scale"] ** 2 / 2)),
             [fo(), pw, sf(), sf(baseline=0.5), sf(baseline="leave_one_out"),
              sf(baseline="moving_average"), stochbp.measure_valued(),
              stochbp.delta_method(sf()),
              stochbp.delta_method(stochbp.measure_valued())],
             "f = cos z, Eq. 15 (no truncation); score-function baselines, "
             "measure-valued and delta-method control variates"),
        Case("MultivariateNormal",
             lambda t: nd.MultivariateNormal(t["loc"], scale_tril=jnp.tril(t["scale_tril"])),
             {"loc": jnp.array([0.2, -0.4]), "scale_tril": jnp.array([[1.0, 0.0], [0.4, 0.8]])},
             lambda z: jnp.exp(a_vec @ z), mvn_exact, [fo(), pw],
             "f = exp(a.z), Eq. 15 with full covariance"),
        Case("Delta", lambda t: nd.Delta(t["v"]), {"v": jnp.array([0.4, -0.8])},
             lambda z: jnp.sum(jnp.sin(z) * z), lambda t: jnp.sum(jnp.sin(t["v"]) * t["v"]),
             [fo(), pw], "Eq. 16 = backpropagation; no score exists"),
        Case("Laplace", lambda t: nd.Laplace(t["loc"], t["scale"]),
             {"loc": jnp.array([0.5]), "scale": jnp.array([0.4])}, cos,
             lambda t: jnp.sum(jnp.cos(t["loc"]) / (1 + t["scale"] ** 2)),
             [fo(order=8), pw, sf(), stochbp.delta_method(sf())],
             "f = cos z, Eq. 19 truncated at order 8 (bias below the noise here)"),
        Case("Gamma", lambda t: nd.Gamma(t["shape"], t["rate"]),
             {"shape": jnp.array([2.0]), "rate": jnp.array([1.5])},
             lambda z: jnp.sum(jnp.exp(-0.49 * z)),
             lambda t: jnp.sum((1 + 0.49 / t["rate"]) ** (-t["shape"])),
             [fo(order=8), stochbp.fourier_exponential(-0.49), pw, sf(), stochbp.grg()],
             "f = exp(-0.49 z), Eq. 20 truncated at order 8, and Eq. 23 (no truncation)"),
        Case("Exponential", lambda t: nd.Exponential(t["rate"]), {"rate": jnp.array([1.5])},
             _sq, lambda t: jnp.sum((1 / t["rate"] - C) ** 2 + 1 / t["rate"] ** 2),
             [fo(order=2), pw, sf(), stochbp.grg()],
             "f = (z - 0.3)^2, Eq. 20: no truncation at order 2 (Chi2, a Gamma too, "
             "has the same rules)"),
        Case("Beta", lambda t: nd.Beta(t["alpha"], t["beta"]),
             {"alpha": jnp.array([6.0]), "beta": jnp.array([7.0])}, _sq, beta_exact,
             [fo(order=2)],
             "Eq. 21 at order 2; the series diverges, so its truncation is biased "
             "(docs/series_bias.md; pathwise is unbiased, like Gamma's)"),
        Case("Dirichlet", lambda t: nd.Dirichlet(t["alpha"]),
             {"alpha": jnp.array([4.0, 5.0, 6.0])}, lambda z: z[0] ** 2 + z[1], dir_exact,
             [fo(order=2)],
             "Eq. 22 at order 2; the series diverges, so its truncation is biased "
             "(docs/series_bias.md; pathwise is unbiased, like Gamma's)"),
        Case("Gumbel (a user cgf)", lambda t: nd.Gumbel(t["loc"], t["scale"]),
             {"loc": jnp.array([0.2]), "scale": jnp.array([0.5])}, _sq, gumbel_exact,
             [fo(order=2, cgf=_gumbel_cgf), sf()],
             "Theorem 1 from a cumulant generating function passed as fourier(cgf=...)"),
        Case("MixtureSameFamily (2 Normals)",
             lambda t: nd.MixtureSameFamily(nd.Categorical(logits=t["logits"]),
                                            nd.Normal(t["loc"], t["scale"])),
             {"logits": jnp.array([0.3, -0.2]), "loc": jnp.array([-1.0, 0.8]),
              "scale": jnp.array([0.6, 1.1])}, cos, mixture_exact,
             [pw, stochbp.mixture_marginal(), sf()],
             "f = cos z; pathwise is Graves' implicit rule, mixture_marginal sums the "
             "component choice out"),
        Case("Bernoulli", lambda t: nd.Bernoulli(probs=t["probs"]),
             {"probs": jnp.array([0.2, 0.7])}, bern_f, bern_exact,
             [fo(), sf(), sf(baseline="moving_average"), stochbp.arm(), stochbp.disarm(),
              stochbp.rebar(), stochbp.rebar(tune=True), stochbp.relax(hidden=(8,)),
              stochbp.gumbel_softmax(0.5)],
             "Eq. 17; exact gradient by enumeration of the 4 states"),
        Case("Categorical", lambda t: nd.Categorical(probs=t["probs"]),
             {"probs": jnp.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])}, cat_f, cat_exact,
             [fo(), sf(), stochbp.arsm(), stochbp.unordered_set(k=2),
              stochbp.rao_blackwell_topk(k=1), stochbp.rebar(), stochbp.relax(hidden=(8,)),
              stochbp.gumbel_softmax(0.5)],
             "Eq. 18, f on one-hot rows (stochbp.one_hot); exact by enumeration of the "
             "9 states"),
    ]


def _fmt(x) -> str:
    return np.array2string(np.asarray(x).ravel(), precision=4, suppress_small=True,
                           floatmode="fixed", separator=" ")


def _family(est) -> str:
    """The factory's name: ``"delta_method(score_function)"`` -> ``"delta_method"``."""
    return est.name.split("(")[0]


def _warm_state(case: Case, est, key, num_samples: int, steps: int = 20):
    """The estimator's state after ``steps`` calls (a moving-average baseline then
    holds a running mean of f); stateless estimators keep their empty state. RELAX's
    network starts at zero output, where relax() equals rebar(); it is given random
    weights instead (RELAX is unbiased for any weights), so its row shows a control
    variate of its own."""
    state = est.init(case.f, case.make_dist(case.theta), key)
    if isinstance(state, stochbp.EmptyState):
        return state
    if est.name == "relax":
        leaves, tree = jax.tree_util.tree_flatten(state.params)
        keys = jax.random.split(jax.random.fold_in(key, 2), len(leaves))
        state = state._replace(params=jax.tree_util.tree_unflatten(tree, [
            x + 0.3 * jax.random.normal(k, jnp.shape(x), jnp.result_type(x))
            for x, k in zip(leaves, keys)]))

    def step(s, k):
        return stochbp.expectation_with_state(case.f, case.make_dist(case.theta), k, s,
                                              estimator=est, num_samples=num_samples)[1], None
    return jax.lax.scan(step, state, jax.random.split(jax.random.fold_in(key, 1), steps))[0]


def _case_draws(case: Case, key, num_draws: int, num_samples: int) -> list:
    """For each estimator of the case, ``num_draws`` gradient estimates (one key each,
    the same keys for every estimator), all in one compiled program. Compiling is most
    of the demo's time and each program runs once on tiny arrays, so the backend's
    code optimisation is turned off (a third less time)."""
    def draws(key):
        out = []
        for est in case.estimators:
            state = _warm_state(case, est, key, num_samples)

            def one(k, est=est, state=state):
                return jax.grad(lambda th: stochbp.expectation_with_state(
                    case.f, case.make_dist(th), k, state, estimator=est,
                    num_samples=num_samples)[0])(case.theta)
            out.append(jax.vmap(one)(jax.random.split(key, num_draws)))
        return out
    return jax.jit(draws, compiler_options={"xla_backend_optimization_level": 0})(key)


def run(num_draws: int = 400, num_samples: int = 4, seed: int = 0, out=print,
        names=None) -> list[dict]:
    """Print, for every case (or those named in ``names``), the exact gradient and each
    estimator's mean +- standard error over ``num_draws`` keys (``num_samples``
    samples per estimate); return one row per (case, estimator, parameter)."""
    stochbp.checks.positive_int("demo", "num_draws", num_draws)
    stochbp.checks.positive_int("demo", "num_samples", num_samples)
    if num_draws < 2 or num_samples < 2:
        raise ValueError("demo: num_draws and num_samples must be at least 2 (standard "
                         "errors; the leave-one-out baseline); got "
                         f"num_draws={num_draws}, num_samples={num_samples}")
    key = jax.random.PRNGKey(seed)
    rows = []
    for case in cases():
        if names is not None and case.name not in names:
            continue
        exact = jax.grad(case.exact)(case.theta)
        out(f"\n== {case.name}: {case.note}")
        for pname in case.theta:
            out(f"  d/d{pname:<11} {'exact':<34} {_fmt(exact[pname])}")
        for est, draws in zip(case.estimators,
                              _case_draws(case, key, num_draws, num_samples)):
            mean = {p: np.mean(np.asarray(g), 0) for p, g in draws.items()}
            se = {p: np.std(np.asarray(g), 0, ddof=1) / np.sqrt(num_draws)
                  for p, g in draws.items()}
            for pname in case.theta:
                err = np.abs(mean[pname] - np.asarray(exact[pname]))
                floor = 1e-8 * (1 + np.abs(np.asarray(exact[pname])))  # rounding, exact rules
                z = float(np.max(err / np.maximum(se[pname], floor)))
                expected = BIASED_BY_DESIGN.get(_family(est)) or (
                    "biased: divergent series" if "diverges" in case.note
                    and _family(est) == "fourier" else "")
                verdict = "ok" if z < 4 else expected or "BIASED"
                out(f"  d/d{pname:<11} {est.name:<34} {_fmt(mean[pname])}"
                    f"  +- {_fmt(se[pname])}  max|z|={min(z, 999):.1f} {verdict}")
                rows.append({"distribution": case.name, "parameter": pname,
                             "estimator": est.name, "factory": _family(est),
                             "class": type(est).__name__,
                             "exact": np.asarray(exact[pname]).tolist(),
                             "mean": mean[pname].tolist(), "stderr": se[pname].tolist(),
                             "z": z, "verdict": verdict})
    out(f"\n(mean +- standard error over {num_draws} keys, {num_samples} samples each; "
        "|z| = |mean - exact| / stderr, 'ok' below 4. A rule with no truncation still "
        "varies from key to key: its samples are random)")
    return rows

"""A side-by-side check of every estimator on every distribution with a closed form.

For each case: theta, a closed-form E[f] (so the exact gradient is jax.grad of it) and
the mean +- standard error of each estimator's gradient over many keys.
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


def cases() -> list[Case]:
    fo = stochbp.fourier
    pw, sf = stochbp.pathwise(), stochbp.score_function()
    bern_w = jnp.array([0.7, -1.3])
    cat_v = jnp.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.7]])

    def bern_f(z):
        z = z.astype(jnp.result_type(float))
        return jnp.sin(z @ bern_w) + z[0] * z[1]

    def bern_exact(t):
        p = t["probs"]
        states = jnp.array([[0, 0], [0, 1], [1, 0], [1, 1]])
        w = jnp.prod(jnp.where(states == 1, p, 1 - p), axis=1)
        return jnp.sum(w * jax.vmap(bern_f)(states))

    def cat_f(z):
        v = cat_v[jnp.arange(2), z]
        return jnp.sin(v[0] * v[1]) + v[0]

    def cat_exact(t):
        p = t["probs"]
        grid = jnp.array([[a, b] for a in range(3) for b in range(3)])
        w = p[0, grid[:, 0]] * p[1, grid[:, 1]]
        return jnp.sum(w * jax.vmap(cat_f)(grid))

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

    return [
        Case("Normal", lambda t: nd.Normal(t["loc"], t["scale"]),
             {"loc": jnp.array([0.5]), "scale": jnp.array([1.2])}, lambda z: jnp.sum(jnp.cos(z)),
             lambda t: jnp.sum(jnp.cos(t["loc"]) * jnp.exp(-t["scale"] ** 2 / 2)),
             [fo(), pw, sf], "f = cos z, Eq. 15 (exact rule)"),
        Case("MultivariateNormal",
             lambda t: nd.MultivariateNormal(t["loc"], scale_tril=jnp.tril(t["scale_tril"])),
             {"loc": jnp.array([0.2, -0.4]), "scale_tril": jnp.array([[1.0, 0.0], [0.4, 0.8]])},
             lambda z: jnp.exp(a_vec @ z), mvn_exact, [fo(), pw, sf],
             "f = exp(a.z), Eq. 15 with full covariance"),
        Case("Delta", lambda t: nd.Delta(t["v"]), {"v": jnp.array([0.4, -0.8])},
             lambda z: jnp.sum(jnp.sin(z) * z), lambda t: jnp.sum(jnp.sin(t["v"]) * t["v"]),
             [fo(), pw], "Eq. 16 = backpropagation; no score exists"),
        Case("Laplace", lambda t: nd.Laplace(t["loc"], t["scale"]),
             {"loc": jnp.array([0.5]), "scale": jnp.array([0.6])}, lambda z: jnp.sum(jnp.cos(z)),
             lambda t: jnp.sum(jnp.cos(t["loc"]) / (1 + t["scale"] ** 2)),
             [fo(order=16), pw, sf], "f = cos z, Eq. 19 truncated at order 16"),
        Case("Gamma", lambda t: nd.Gamma(t["shape"], t["rate"]),
             {"shape": jnp.array([2.0]), "rate": jnp.array([1.5])},
             lambda z: jnp.sum(jnp.exp(-0.49 * z)),
             lambda t: jnp.sum((1 + 0.49 / t["rate"]) ** (-t["shape"])),
             [fo(order=16), stochbp.fourier_exponential(-0.49), pw, sf],
             "f = exp(-0.49 z), Eq. 20 and Eq. 23"),
        Case("Exponential", lambda t: nd.Exponential(t["rate"]), {"rate": jnp.array([1.5])},
             _sq, lambda t: jnp.sum((1 / t["rate"] - C) ** 2 + 1 / t["rate"] ** 2),
             [fo(order=2), pw, sf], "f = (z - 0.3)^2, Eq. 20 exact at order 2"),
        Case("Chi2", lambda t: nd.Chi2(t["df"]), {"df": jnp.array([3.0])}, _sq,
             lambda t: jnp.sum((t["df"] - C) ** 2 + 2 * t["df"]), [fo(order=2), pw, sf],
             "f = (z - 0.3)^2"),
        Case("Beta", lambda t: nd.Beta(t["alpha"], t["beta"]),
             {"alpha": jnp.array([6.0]), "beta": jnp.array([7.0])}, _sq, beta_exact,
             [fo(order=2), pw, sf], "Eq. 21 at order 2; the series diverges, so truncation is biased (docs/series_bias.md)"),
        Case("Dirichlet", lambda t: nd.Dirichlet(t["alpha"]),
             {"alpha": jnp.array([4.0, 5.0, 6.0])}, lambda z: z[0] ** 2 + z[1], dir_exact,
             [fo(order=2), pw, sf], "Eq. 22 at order 2; the series diverges, so truncation is biased (docs/series_bias.md)"),
        Case("Bernoulli", lambda t: nd.Bernoulli(probs=t["probs"]),
             {"probs": jnp.array([0.2, 0.7])}, bern_f, bern_exact, [fo(), sf],
             "Eq. 17; exact by enumeration"),
        Case("Categorical", lambda t: nd.Categorical(probs=t["probs"]),
             {"probs": jnp.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])}, cat_f, cat_exact,
             [fo(), sf], "Eq. 18; exact by enumeration"),
    ]


def _fmt(x) -> str:
    return np.array2string(np.asarray(x).ravel(), precision=4, suppress_small=True,
                           floatmode="fixed", separator=" ")


def run(num_draws: int = 400, num_samples: int = 4, seed: int = 0, out=print) -> list[dict]:
    key = jax.random.PRNGKey(seed)
    rows = []
    for case in cases():
        exact = jax.grad(case.exact)(case.theta)
        out(f"\n== {case.name}: {case.note}")
        for pname in case.theta:
            out(f"  d/d{pname:<11} {'exact':<21} {_fmt(exact[pname])}")
        for est in case.estimators:
            stats = stochbp.diagnostics.gradient_stats(
                case.f, case.make_dist, case.theta, key, estimator=est,
                num_samples=num_samples, num_draws=num_draws)
            for pname in case.theta:
                err = np.abs(np.asarray(stats.mean[pname]) - np.asarray(exact[pname]))
                se = np.asarray(stats.stderr[pname])
                floor = 1e-8 * (1 + np.abs(np.asarray(exact[pname])))  # rounding, exact rules
                z = float(np.max(err / np.maximum(se, floor)))
                verdict = "ok" if z < 4 else "BIASED"
                out(f"  d/d{pname:<11} {est.name:<21} {_fmt(stats.mean[pname])}"
                    f"  +- {_fmt(stats.stderr[pname])}  max|z|={min(z, 999):.1f} {verdict}")
                rows.append({"distribution": case.name, "parameter": pname,
                             "estimator": est.name,
                             "exact": np.asarray(exact[pname]).tolist(),
                             "mean": np.asarray(stats.mean[pname]).tolist(),
                             "stderr": np.asarray(stats.stderr[pname]).tolist()})
    out(f"\n(mean +- standard error over {num_draws} keys, {num_samples} samples each; "
        "|z| = |mean - exact| / stderr, 'ok' below 4; exact rules have stderr ~ 0)")
    return rows

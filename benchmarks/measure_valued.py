"""Per-parameter gradient variance of the measure-valued rules beside pathwise and the
score function, and of the delta-method control variate with a fixed or estimated
coefficient. Prints Markdown tables (float64, one process, same keys for every
estimator; stochbp.diagnostics.compare).

Part 1, f(z) = sum_j z_j^2 (smooth, so pathwise applies), 2 coordinates, S = 4 draws
per estimate, R = 2000 estimates:
  Poisson(rate = (0.5, 3)), Gamma(concentration = (0.8, 3), rate = (1.5, 0.7)),
  Weibull(scale = (0.8, 1.5), concentration = (1.5, 3)).
Part 2, Normal(mu = (0.3, -1, 0.8), sigma = (0.7, 1.5, 0.4)), S = 8, f = sum sin(2z)
(the quadratic expansion is poor, the best coefficient far from 1), sum cos(z) + z and
sum exp(z).

    PYTHONPATH=src python benchmarks/measure_valued.py [--draws 2000]
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpyro.distributions as nd
from jax.scipy.special import gammaln

import stochbp

jax.config.update("jax_enable_x64", True)


def square(z):
    return jnp.sum(z ** 2)


FAMILIES = {
    "Poisson": (lambda t: nd.Poisson(t["rate"]), {"rate": jnp.array([0.5, 3.0])},
                lambda t: jnp.sum(t["rate"] + t["rate"] ** 2)),
    "Gamma": (lambda t: nd.Gamma(t["concentration"], t["rate"]),
              {"concentration": jnp.array([0.8, 3.0]), "rate": jnp.array([1.5, 0.7])},
              lambda t: jnp.sum(t["concentration"] * (t["concentration"] + 1)
                                / t["rate"] ** 2)),
    "Weibull": (lambda t: nd.Weibull(t["scale"], t["concentration"]),
                {"scale": jnp.array([0.8, 1.5]), "concentration": jnp.array([1.5, 3.0])},
                lambda t: jnp.sum(t["scale"] ** 2
                                  * jnp.exp(gammaln(1 + 2 / t["concentration"])))),
}

NORMAL_F = {
    "sum sin(2z)": (lambda z: jnp.sum(jnp.sin(2 * z)),
                    lambda t: jnp.sum(jnp.sin(2 * t["mu"]) * jnp.exp(-2 * t["sigma"] ** 2))),
    "sum cos(z) + z": (lambda z: jnp.sum(jnp.cos(z) + z),
                       lambda t: jnp.sum(jnp.cos(t["mu"]) * jnp.exp(-t["sigma"] ** 2 / 2)
                                         + t["mu"])),
    "sum exp(z)": (lambda z: jnp.sum(jnp.exp(z)),
                   lambda t: jnp.sum(jnp.exp(t["mu"] + t["sigma"] ** 2 / 2))),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args()
    key = jax.random.key(0)
    for name, (make, theta, exact) in FAMILIES.items():
        ests = {"measure_valued(coupled=True)": stochbp.measure_valued(True),
                "measure_valued(coupled=False)": stochbp.measure_valued(False),
                "score_function": stochbp.score_function(),
                "score_function('leave_one_out')": stochbp.score_function("leave_one_out")}
        if name != "Poisson":
            ests["pathwise"] = stochbp.pathwise()
        result = stochbp.diagnostics.compare(square, make, theta, key, ests, num_samples=4,
                                             num_draws=args.draws, reference=exact,
                                             batch_size=None, timing_repeats=10)
        print(f"\n### {name}, f = sum z^2, S = 4\n")
        print(result.table())
    normal = lambda t: nd.Normal(t["mu"], t["sigma"])  # noqa: E731
    theta = {"mu": jnp.array([0.3, -1.0, 0.8]), "sigma": jnp.array([0.7, 1.5, 0.4])}
    for fname, (f, exact) in NORMAL_F.items():
        ests = {}
        for inner_name, inner in (("score_function", stochbp.score_function()),
                                  ("measure_valued", stochbp.measure_valued())):
            ests[inner_name] = inner
            ests[f"delta({inner_name}, 1)"] = stochbp.delta_method(inner)
            ests[f"delta({inner_name}, estimated)"] = stochbp.delta_method(inner,
                                                                           "estimated")
        result = stochbp.diagnostics.compare(f, normal, theta, key, ests, num_samples=8,
                                             num_draws=args.draws, reference=exact,
                                             batch_size=None, timing_repeats=10)
        print(f"\n### Normal, f = {fname}, S = 8\n")
        print(result.table())


if __name__ == "__main__":
    main()

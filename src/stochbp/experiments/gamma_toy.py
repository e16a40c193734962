"""Section 6.1: the gamma toy problems.

p_theta(z) = prod_j Gamma(z_j; k_j, mu_j) (shape k, scale mu; numpyro's rate is 1/mu),
theta = {k, mu} = softplus(rho) kept positive. Minimise with Adam (learning rate 1e-3)
    toy 1:  L(theta) = E ||z - eps||^2        = sum_j (k_j mu_j - eps)^2 + k_j mu_j^2
    toy 2:  L(theta) = E sum_j exp(-eps z_j)  = sum_j (1 + eps mu_j)^(-k_j)
with eps = 0.49, both closed form (the training loss plotted is the exact L). The
estimators come from the library: fourier is Eq. 20 at order 2 (exact for toy 1) and
Eq. 23 (stochbp.fourier_exponential) for toy 2.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpyro.distributions as nd
import optax

import stochbp
from stochbp.experiments import common, continuous, labels
from stochbp.experiments.runner import Experiment, RunSpec
from stochbp.experiments.settings import (POSITIVE_INT, POSITIVE_NUMBER, Settings,
                                          int_at_least, non_empty_list, one_of, setting)

EPS = 0.49
ESTIMATORS = ("fourier", "pathwise", "score_function", "grg")
FOURIER_ORDER_TOY1 = 2  # Eq. 20 at order 2 is exact for the quadratic f of toy 1


@dataclasses.dataclass(frozen=True)
class GammaToySettings(Settings):
    toys: tuple = setting((1, 2), non_empty_list(one_of(1, 2)), "toy problems to run")
    dims: tuple = setting((1, 10, 100), non_empty_list(POSITIVE_INT), "dimensions d")
    steps: int = setting(10000, POSITIVE_INT, "Adam steps per run")
    eval_every: int = setting(100, POSITIVE_INT, "steps between evaluations")
    variance_draws: int = setting(100, int_at_least(2),
                                  "gradient draws per variance evaluation")
    num_samples: int = setting(1, POSITIVE_INT, "samples per gradient estimate")
    learning_rate: float = setting(1e-3, POSITIVE_NUMBER, "Adam's learning rate")
    init_shape: float = setting(1.0, POSITIVE_NUMBER, "initial shape k")
    init_scale: float = setting(1.0, POSITIVE_NUMBER, "initial scale mu")


QUICK = {"steps": 1500, "variance_draws": 50}  # --quick: changes to the paper's setting


def settings(quick: bool) -> GammaToySettings:
    paper = GammaToySettings()
    return paper.replace(**QUICK) if quick else paper


def make_estimator(name: str, toy: int):
    label = labels.parse(name)
    if label.estimator == "fourier":
        return (stochbp.fourier(order=FOURIER_ORDER_TOY1) if toy == 1
                else stochbp.fourier_exponential(-EPS))
    return getattr(stochbp, label.estimator)()


def objective(toy: int):
    if toy == 1:
        return lambda z: jnp.sum((z - EPS) ** 2)
    return lambda z: jnp.sum(jnp.exp(-EPS * z))


def exact_loss(toy: int, k, mu):
    if toy == 1:
        return jnp.sum((k * mu - EPS) ** 2 + k * mu ** 2)
    return jnp.sum((1 + EPS * mu) ** (-k))


def constrained(params):
    return jax.nn.softplus(params["rho_k"]), jax.nn.softplus(params["rho_mu"])


def runs(s: GammaToySettings, estimators: list, seeds: list) -> list:
    return [RunSpec(f"toy{toy}-d{d}-{est}-seed{seed}",
                    {"toy": toy, "dim": d, "estimator": est, "seed": seed})
            for toy in s.toys for d in s.dims for est in estimators for seed in seeds]


@functools.lru_cache(maxsize=None)
def _compiled(toy: int, dim: int, est_name: str, num_samples: int, lr: float, draws: int):
    est = make_estimator(est_name, toy)
    f = objective(toy)
    opt = optax.adam(lr)

    def surrogate(params, key):
        k, mu = constrained(params)
        return stochbp.expectation(f, nd.Gamma(k, 1.0 / mu), key, estimator=est,
                                   num_samples=num_samples)

    grad_fn = jax.grad(surrogate)

    def loss_and_grad(params, seed, step):
        k, mu = constrained(params)
        return exact_loss(toy, k, mu), grad_fn(params, common.step_key(seed, step))

    @jax.jit
    def evaluate(params, seed, step):
        keys = jax.random.split(common.step_key(seed, step, common.VARIANCE_STREAM), draws)
        mean, logvar, _ = common.gradient_moments(grad_fn, params, keys)
        k, mu = constrained(params)
        return {"loss": exact_loss(toy, k, mu), "grad_log_variance": logvar,
                "grad_norm": jnp.linalg.norm(mean), "shape_mean": jnp.mean(k),
                "scale_mean": jnp.mean(mu)}

    return continuous.Compiled(
        opt, continuous.scanned(continuous.training_step(opt, loss_and_grad)), evaluate)


def compiled(spec: RunSpec, s: GammaToySettings) -> continuous.Compiled:
    c = spec.config
    return _compiled(c["toy"], c["dim"], c["estimator"], s.num_samples, s.learning_rate,
                     s.variance_draws)


def initial_params(spec: RunSpec, s: GammaToySettings) -> dict:
    d = spec.config["dim"]
    dtype = jnp.result_type(float)
    return {"rho_k": jnp.full((d,), common.softplus_inverse(s.init_shape), dtype),
            "rho_mu": jnp.full((d,), common.softplus_inverse(s.init_scale), dtype)}


HOOKS = continuous.AdamHooks(compiled, initial_params, step_metric="loss")


def figures(out: Path) -> list:
    from stochbp.experiments import plots
    return plots.gamma_figures(out)


def report(out: Path, rel_to: Path = None) -> str:
    from stochbp.experiments import report as rep
    return rep.gamma_report(out, rel_to)


EXPERIMENT = Experiment(
    name="gamma-toy", description="Section 6.1: gamma toy problems 1 and 2",
    estimator_names=ESTIMATORS, settings=settings, runs=runs, init=HOOKS.init,
    advance=HOOKS.advance, evaluate=HOOKS.evaluate, total_steps=lambda s: s.steps,
    figures=figures, report=report)

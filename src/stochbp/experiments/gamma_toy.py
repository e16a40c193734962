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

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpyro.distributions as nd
import optax

import stochbp
from stochbp.experiments import common
from stochbp.experiments.runner import Experiment, RunSpec

EPS = 0.49
ESTIMATORS = ("fourier", "pathwise", "score_function", "grg")


def make_estimator(name: str, toy: int):
    if name == "fourier":
        return stochbp.fourier(order=2) if toy == 1 else stochbp.fourier_exponential(-EPS)
    return {"pathwise": stochbp.pathwise, "score_function": stochbp.score_function,
            "grg": stochbp.grg}[name]()


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


def settings(quick: bool) -> dict:
    if quick:
        return {"toys": [1, 2], "dims": [1, 10, 100], "steps": 1500, "eval_every": 100,
                "variance_draws": 50, "num_samples": 1, "learning_rate": 1e-3,
                "init_shape": 1.0, "init_scale": 1.0}
    return {"toys": [1, 2], "dims": [1, 10, 100], "steps": 10000, "eval_every": 100,
            "variance_draws": 100, "num_samples": 1, "learning_rate": 1e-3,
            "init_shape": 1.0, "init_scale": 1.0}


def runs(s: dict, estimators: list, seeds: list) -> list:
    return [RunSpec(f"toy{toy}-d{d}-{est}-seed{seed}",
                    {"toy": toy, "dim": d, "estimator": est, "seed": seed})
            for toy in s["toys"] for d in s["dims"] for est in estimators for seed in seeds]


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

    def one_step(carry, step):
        params, opt_state, seed = carry
        k, mu = constrained(params)
        loss = exact_loss(toy, k, mu)
        g = grad_fn(params, common.step_key(seed, step))
        updates, opt_state = opt.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, seed), loss

    @jax.jit
    def advance(params, opt_state, seed, start, n_steps_array):
        steps = start + jnp.arange(n_steps_array.shape[0])
        (params, opt_state, _), losses = jax.lax.scan(one_step, (params, opt_state, seed),
                                                      steps)
        return params, opt_state, losses

    @jax.jit
    def evaluate(params, seed, step):
        keys = jax.random.split(common.step_key(seed, step, stream=1), draws)
        mean, logvar, _ = common.gradient_moments(grad_fn, params, keys)
        k, mu = constrained(params)
        return {"loss": exact_loss(toy, k, mu), "grad_log_variance": logvar,
                "grad_norm": jnp.linalg.norm(mean), "shape_mean": jnp.mean(k),
                "scale_mean": jnp.mean(mu)}

    return opt, advance, evaluate


def _fns(spec: RunSpec, s: dict):
    c = spec.config
    return _compiled(c["toy"], c["dim"], c["estimator"], s["num_samples"],
                     s["learning_rate"], s["variance_draws"])


def init(spec: RunSpec, s: dict):
    d = spec.config["dim"]
    dtype = jnp.result_type(float)
    params = {"rho_k": jnp.full((d,), common.softplus_inverse(s["init_shape"]), dtype),
              "rho_mu": jnp.full((d,), common.softplus_inverse(s["init_scale"]), dtype)}
    opt, _, _ = _fns(spec, s)
    return {"params": params, "opt_state": opt.init(params), "step": 0}


def advance(spec: RunSpec, s: dict, state, n: int):
    return common.advance_chunk(_fns(spec, s)[1], state, spec.config["seed"], n, "loss")


def evaluate(spec: RunSpec, s: dict, state) -> dict:
    _, _, ev = _fns(spec, s)
    return common.floats(ev(common.strong(state["params"]), jnp.int32(spec.config["seed"]),
                            jnp.int32(state["step"])))


def figures(out: Path) -> list:
    from stochbp.experiments import plots
    return plots.gamma_figures(out)


def report(out: Path, rel_to: Path = None) -> str:
    from stochbp.experiments import report as rep
    return rep.gamma_report(out, rel_to)


EXPERIMENT = Experiment(
    name="gamma-toy", description="Section 6.1: gamma toy problems 1 and 2",
    estimator_names=ESTIMATORS, settings=settings, runs=runs, init=init, advance=advance,
    evaluate=evaluate, total_steps=lambda s: s["steps"], figures=figures, report=report)

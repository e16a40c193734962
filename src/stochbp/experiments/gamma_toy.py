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
import numpy as np
import numpyro.distributions as nd
import optax

import stochbp
from stochbp.experiments import common, continuous, labels, parallel
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


# ------------------------------------------------------------------ the pooling test
POOLING_DRAWS = 2000  # gradient draws of the noise-to-signal ratio at the start
POOLING_ESTIMATORS = ("fourier", "printed", "pathwise")


def _printed_gradient(num_samples: int):
    """The paper's printed toy-2 rule, grad_theta log phi(eps / i) E[f(z)], with f the
    summed f(z) = sum_j exp(-eps z_j): coordinate j gets
        grad K_j(-eps) * (1/S) sum_s sum_i exp(-eps z_si),
    K_j(t) = -k_j log(1 - mu_j t) the CGF of Gamma(shape k_j, scale mu_j). (Eq. 23 is
    exact for f = exp(-eps sum_j z_j); for the summed f it pools every coordinate's draw.)
    Returns (params, key) -> gradient dict."""
    def grad_fn(params, key):
        k, mu = constrained(params)
        z = jax.lax.stop_gradient(nd.Gamma(k, 1.0 / mu).sample(key, (num_samples,)))
        f_mean = jax.lax.stop_gradient(jnp.mean(jnp.sum(jnp.exp(-EPS * z), axis=-1)))

        def surrogate(p):
            kk, mm = constrained(p)
            return jnp.sum(-kk * jnp.log1p(EPS * mm)) * f_mean
        return jax.grad(surrogate)(params)
    return grad_fn


@functools.lru_cache(maxsize=None)
def _pooling_functions(dim: int, est_name: str, num_samples: int, lr: float,
                       variance_draws: int):
    """(optimizer, jit(advance), jit(grad draws over keys)) of toy 2 for one estimator of
    the test; fourier and pathwise train with the experiment's own compiled scan."""
    if est_name == "printed":
        grad_fn = _printed_gradient(num_samples)
    else:
        est, f = make_estimator(est_name, 2), objective(2)
        grad_fn = jax.grad(lambda params, key: stochbp.expectation(
            f, nd.Gamma(*_shape_rate(params)), key, estimator=est, num_samples=num_samples))
    draws = jax.jit(lambda params, keys: jax.vmap(lambda k: grad_fn(params, k))(keys))
    if est_name != "printed":  # the experiment's own training scan (compiled once)
        c = _compiled(2, dim, est_name, num_samples, lr, variance_draws)
        return c.optimizer, c.advance, draws
    opt = optax.adam(lr)

    def loss_and_grad(params, seed, step):
        k, mu = constrained(params)
        return exact_loss(2, k, mu), grad_fn(params, common.step_key(seed, step))

    return opt, continuous.scanned(continuous.training_step(opt, loss_and_grad)), draws


def _shape_rate(params):
    k, mu = constrained(params)
    return k, 1.0 / mu


def _train(advance, opt, start, seed: int, s: GammaToySettings) -> np.ndarray:
    """The exact loss at every step of a run from ``start``, advanced in chunks of
    eval_every steps as the runner does, with the inputs placed on the current mesh as
    the runner places them (a jitted function compiles again for other placements, so
    this reuses the runs' compiled scan)."""
    params, opt_state = parallel.replicate(common.strong((start, opt.init(start))))
    losses, step = [], 0
    while step < s.steps:
        n = min(s.eval_every, s.steps - step)
        params, opt_state, values = advance(
            params, opt_state, *parallel.replicate((jnp.int32(seed), jnp.int32(step))),
            jnp.zeros(n))
        losses.append(parallel.to_host(values))
        step += n
    return np.concatenate(losses)


def pooling_test(s: GammaToySettings, seeds: list) -> dict:
    """Toy 2 from the symmetric start with the printed formula beside fourier and
    pathwise: per (d, estimator) the mean and final exact loss of each seed's run (same
    keys as the experiment's runs) and log(mean variance / mean squared gradient) at the
    start over POOLING_DRAWS draws."""
    rows = []
    spec0 = RunSpec("pooling", {"dim": 1})
    for d in s.dims:
        start = initial_params(dataclasses.replace(spec0, config={"dim": d}), s)
        for name in POOLING_ESTIMATORS:
            opt, advance, draws = _pooling_functions(d, name, s.num_samples, s.learning_rate,
                                                     s.variance_draws)
            mean_loss, final_loss = [], []
            for seed in seeds:
                losses = _train(advance, opt, start, seed, s)
                mean_loss.append(float(np.mean(losses)))
                final_loss.append(float(losses[-1]))
            g = draws(start, jax.random.split(jax.random.PRNGKey(0), POOLING_DRAWS))
            flat = jnp.concatenate([g["rho_k"], g["rho_mu"]], axis=1)
            ratio = jnp.mean(jnp.var(flat, axis=0, ddof=1)) / jnp.mean(flat.mean(0) ** 2)
            rows.append({"dim": d, "estimator": name, "mean_loss": mean_loss,
                         "final_loss": final_loss,
                         "log_noise_to_signal": float(jnp.log(ratio))})
    return {"rows": rows, "seeds": list(seeds), "steps": s.steps, "draws": POOLING_DRAWS}


def analyse(out: Path, s: GammaToySettings, progress_cls) -> None:
    """analysis/pooling.json: :func:`pooling_test` when toy 2 is in the grid."""
    from stochbp.experiments import io, reporting
    path = Path(out) / "analysis" / "pooling.json"
    if path.exists() or 2 not in s.toys:
        return
    seeds = reporting.read_manifest(out)["seeds"]
    bar = progress_cls(1, "toy 2 pooling test")
    result = pooling_test(s, seeds)
    bar.update(1)
    bar.close()
    io.write_json(path, result)


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
    analyse=analyse, figures=figures, report=report)

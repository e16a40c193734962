"""Section 6.2: Bayesian logistic regression with Laplace priors and posteriors.

Model (Eq. 25): p(w) = prod_j Laplace(w_j; 0, 1), p(y | x, w) = sigmoid(y x^T w).
Posterior q(w) = prod_j Laplace(w_j; mu_j, b_j), theta = {mu, b = softplus(rho)}.
ELBO (Eqs. 26-27) on a minibatch B of the N points:
    (N/|B|) sum_{i in B} E_q[log sigmoid(y_i x_i^T w)] - KL[q || p],
    KL = sum_j |mu_j| + b_j exp(-|mu_j| / b_j) - log b_j - 1,
maximised with Adam (1e-3), batch 64, 50 posterior samples. The expected
log-likelihood's gradient comes from the library estimator; the KL is analytic.
"fourier-nN" keeps N terms of Eq. 19's sum, i.e. stochbp.fourier(order=2N), and f is
declared linear (stochbp.linear) so the fast path is used.
"""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import optax

import stochbp
from stochbp.experiments import common, data, io
from stochbp.experiments.runner import Experiment, RunSpec

ESTIMATORS = ("fourier-n4", "fourier-n8", "pathwise", "score_function")


def make_estimator(name: str):
    if name.startswith("fourier-n"):
        return stochbp.fourier(order=2 * int(name[len("fourier-n"):]))
    return {"pathwise": stochbp.pathwise, "score_function": stochbp.score_function}[name]()


def kl_laplace(mu, b):
    """Eq. 27: KL[Laplace(mu, b) || Laplace(0, 1)], summed over coordinates."""
    a = jnp.abs(mu)
    return jnp.sum(a + b * jnp.exp(-a / b) - jnp.log(b) - 1.0)


def loglik(A, scale=1.0):
    """f(w) = scale * sum_i log sigmoid(A_i . w), declared linear in w."""
    return stochbp.linear(lambda u: scale * jax.nn.log_sigmoid(u), A, elementwise=True)


def posterior(params):
    return params["mu"], jax.nn.softplus(params["rho"])


def settings(quick: bool) -> dict:
    base = {"batch_size": 64, "num_samples": 50, "learning_rate": 1e-3, "init_scale": 0.1,
            "variance_draws": 50, "elbo_samples": 256,
            "truncation_levels": list(range(1, 11)), "truncation_draws": 200,
            "reference_chunks": 32, "reference_chunk_size": 4096}
    steps_per_epoch = 569 // base["batch_size"]
    if quick:
        return {**base, "epochs": 100, "snapshot_epoch": 100, "eval_every": steps_per_epoch,
                "steps_per_epoch": steps_per_epoch, "truncation_draws": 100,
                "reference_chunks": 8}
    return {**base, "epochs": 200, "snapshot_epoch": 100, "eval_every": steps_per_epoch,
            "steps_per_epoch": steps_per_epoch}


def runs(s: dict, estimators: list, seeds: list) -> list:
    return [RunSpec(f"{est}-seed{seed}", {"estimator": est, "seed": seed})
            for est in estimators for seed in seeds]


@functools.lru_cache(maxsize=1)
def _data():
    X, y = data.breast_cancer()
    dtype = jnp.result_type(float)
    return jnp.asarray(X, dtype), jnp.asarray(y, dtype)


def _batch(s, seed, step):
    X, y = _data()
    n, bsz = X.shape[0], s["batch_size"]
    epoch, pos = step // s["steps_per_epoch"], step % s["steps_per_epoch"]
    perm = jax.random.permutation(common.step_key(seed, epoch, stream=2), n)
    idx = jax.lax.dynamic_slice(perm, (pos * bsz,), (bsz,))
    return y[idx, None] * X[idx]


def _settings_key(s):
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in s.items()))


@functools.lru_cache(maxsize=None)
def _compiled(est_name: str, skey: tuple):
    s = dict(skey)
    est = make_estimator(est_name)
    X, _ = _data()
    n = X.shape[0]
    opt = optax.adam(s["learning_rate"])

    def neg_elbo_with(estimator):
        def loss(params, A, key):
            mu, b = posterior(params)
            ell = stochbp.expectation(loglik(A, n / A.shape[0]), nd.Laplace(mu, b), key,
                                      estimator=estimator, num_samples=s["num_samples"])
            return -(ell - kl_laplace(mu, b))
        return loss

    loss = neg_elbo_with(est)
    grad_fn = jax.grad(loss)

    def one_step(carry, step):
        params, opt_state, seed = carry
        A = _batch(s, seed, step)
        value, g = jax.value_and_grad(loss)(params, A, common.step_key(seed, step))
        updates, opt_state = opt.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, seed), -value

    @jax.jit
    def advance(params, opt_state, seed, start, dummy):
        steps = start + jnp.arange(dummy.shape[0])
        (params, opt_state, _), elbos = jax.lax.scan(one_step, (params, opt_state, seed),
                                                     steps)
        return params, opt_state, elbos

    others = {name: jax.grad(neg_elbo_with(make_estimator(name)))
              for name in ("pathwise", "score_function")}

    @jax.jit
    def evaluate(params, seed, step):
        Xf, yf = _data()
        A_full = yf[:, None] * Xf
        mu, b = posterior(params)
        w = nd.Laplace(mu, b).sample(common.step_key(seed, step, stream=3),
                                     (s["elbo_samples"],))
        ell = jnp.mean(jax.vmap(loglik(A_full))(w))
        A = _batch(s, seed, jnp.maximum(step - 1, 0))
        keys = jax.random.split(common.step_key(seed, step, stream=1), s["variance_draws"])
        mean, logvar, draws = common.gradient_moments(lambda p, k: grad_fn(p, A, k),
                                                      params, keys)
        out = {"elbo": ell - kl_laplace(mu, b), "accuracy": jnp.mean((Xf @ mu) * yf > 0),
               "grad_log_variance": logvar, "grad_norm": jnp.linalg.norm(mean),
               "scale_mean": jnp.mean(b), "scale_times_max_x": jnp.max(b * jnp.max(
                   jnp.abs(Xf), axis=0))}
        if est_name.startswith("fourier"):
            for name, g_other in others.items():
                _, _, other = common.gradient_moments(lambda p, k: g_other(p, A, k),
                                                      params, keys)
                out[f"mse_vs_{name}"] = jnp.mean((draws - other) ** 2)
        return out

    return opt, advance, evaluate


def _fns(spec, s):
    return _compiled(spec.config["estimator"], _settings_key(s))


def init(spec: RunSpec, s: dict):
    d = _data()[0].shape[1]
    dtype = jnp.result_type(float)
    params = {"mu": jnp.zeros((d,), dtype),
              "rho": jnp.full((d,), common.softplus_inverse(s["init_scale"]), dtype)}
    opt, _, _ = _fns(spec, s)
    return {"params": params, "opt_state": opt.init(params), "step": 0}


def advance(spec: RunSpec, s: dict, state, n: int):
    return common.advance_chunk(_fns(spec, s)[1], state, spec.config["seed"], n, "elbo_batch")


def evaluate(spec: RunSpec, s: dict, state) -> dict:
    _, _, ev = _fns(spec, s)
    step = int(state["step"])
    out = common.floats(ev(common.strong(state["params"]), jnp.int32(spec.config["seed"]),
                           jnp.int32(step)))
    out["epoch"] = step // s["steps_per_epoch"]
    if step == s["snapshot_epoch"] * s["steps_per_epoch"]:
        mu, b = posterior(state["params"])
        out["snapshot"] = {"mu": np.asarray(mu).tolist(), "b": np.asarray(b).tolist()}
    return out


def _snapshot(out: Path):
    from stochbp.experiments.runner import load_runs
    runs_ = load_runs(out)
    order = {name: i for i, name in enumerate(("fourier-n8", "fourier-n4", "pathwise",
                                                "score_function"))}
    runs_.sort(key=lambda r: (order.get(r["config"]["estimator"], 9), r["config"]["seed"]))
    for r in runs_:
        for e in r["evals"]:
            if "snapshot" in e:
                return r["run_id"], e["epoch"], e["snapshot"]
    return None


def analyse(out: Path, s: dict, progress_cls) -> None:
    """Bias and variance of fourier(order=2N), N = 1..10, at a fixed theta (Fig. 4 left),
    against a high-precision pathwise reference, on the full-data log-likelihood."""
    path = out / "analysis" / "truncation.json"
    if path.exists():
        return
    snap = _snapshot(out)
    if snap is None:
        return
    run_id, epoch, theta = snap
    X, y = _data()
    f = loglik(y[:, None] * X)
    mu = jnp.asarray(theta["mu"])
    b = jnp.asarray(theta["b"])

    def grad_of(estimator, num_samples):
        return jax.jit(jax.vmap(jax.grad(
            lambda m, bb, k: stochbp.expectation(f, nd.Laplace(m, bb), k, estimator=estimator,
                                                 num_samples=num_samples), argnums=(0, 1)),
            in_axes=(None, None, 0)))

    levels = s["truncation_levels"]
    bar = progress_cls(len(levels) + 3, "truncation analysis")
    ref_fn = grad_of(stochbp.pathwise(), s["reference_chunk_size"])
    keys = jax.random.split(jax.random.PRNGKey(12345), s["reference_chunks"])
    gm, gb = ref_fn(mu, b, keys)
    ref = jnp.concatenate([gm, gb], axis=1)
    ref_mean, ref_se = ref.mean(0), ref.std(0, ddof=1) / np.sqrt(ref.shape[0])
    bar.update(1)
    draw_keys = jax.random.split(jax.random.PRNGKey(777), s["truncation_draws"])
    rows = []
    names = [(f"fourier-n{N}", stochbp.fourier(order=2 * N)) for N in levels]
    names += [("pathwise", stochbp.pathwise()), ("score_function", stochbp.score_function())]
    for name, est in names:
        gm, gb = grad_of(est, s["num_samples"])(mu, b, draw_keys)
        g = jnp.concatenate([gm, gb], axis=1)
        mean = g.mean(0)
        bias = mean - ref_mean
        se = jnp.sqrt(g.var(0, ddof=1) / g.shape[0] + ref_se ** 2)
        rows.append({"estimator": name,
                     "truncation": int(name[len("fourier-n"):]) if name.startswith("fourier")
                     else None,
                     "bias_norm": float(jnp.linalg.norm(bias)),
                     "bias_norm_scale_only": float(jnp.linalg.norm(bias[mu.shape[0]:])),
                     "bias_noise_norm": float(jnp.linalg.norm(se)),
                     "max_abs_z": float(jnp.max(jnp.abs(bias) / se)),
                     "mean_variance": float(jnp.mean(g.var(0, ddof=1))),
                     "log_mean_variance": float(jnp.log(jnp.mean(g.var(0, ddof=1))))})
        bar.update(1)
    bar.close()
    io.write_json(path, {"theta_from": run_id, "epoch": epoch, "rows": rows,
                         "reference": {"samples": int(s["reference_chunks"]
                                                      * s["reference_chunk_size"]),
                                       "mean": np.asarray(ref_mean).tolist(),
                                       "stderr": np.asarray(ref_se).tolist()},
                         "scale_times_max_x": float(jnp.max(b * jnp.max(jnp.abs(X), 0))),
                         "draws": s["truncation_draws"], "num_samples": s["num_samples"]})


def figures(out: Path) -> list:
    from stochbp.experiments import plots
    return plots.blr_figures(out)


def report(out: Path, rel_to: Path = None) -> str:
    from stochbp.experiments import report as rep
    return rep.blr_report(out, rel_to)


EXPERIMENT = Experiment(
    name="laplace-blr", description="Section 6.2: Bayesian logistic regression, Laplace "
    "prior and posterior, breast cancer data", estimator_names=ESTIMATORS,
    settings=settings, runs=runs, init=init, advance=advance, evaluate=evaluate,
    total_steps=lambda s: s["epochs"] * s["steps_per_epoch"], analyse=analyse,
    figures=figures, report=report)

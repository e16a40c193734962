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

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import optax

import stochbp
from stochbp.experiments import common, continuous, data, io, labels, parallel, reporting
from stochbp.experiments.runner import Experiment, RunSpec
from stochbp.experiments.settings import (NON_NEGATIVE_INT, POSITIVE_INT, POSITIVE_NUMBER,
                                          Settings, int_at_least, non_empty_list, setting)

# fourier-n2 and fourier-n4 are the paper's "N = 4 and N = 8" if N is the highest
# derivative order (Eq. 24); fourier-n4 and fourier-n8 if N counts the terms of Eq. 19
ESTIMATORS = ("fourier-n2", "fourier-n4", "fourier-n8", "pathwise", "score_function")
# the baselines each Fourier run's gradient draws are compared with (mse_vs_<label>)
COMPARED_WITH = ("pathwise", "score_function")
DATA_SIZE = 569  # points of the breast cancer data set
# fixed keys of the truncation analysis (not tied to a run's seed)
REFERENCE_KEY = 12345  # the high-precision pathwise reference
TRUNCATION_DRAWS_KEY = 777  # the draws of every estimator compared with it


@dataclasses.dataclass(frozen=True)
class LaplaceBlrSettings(Settings):
    batch_size: int = setting(64, POSITIVE_INT, "minibatch size")
    num_samples: int = setting(50, POSITIVE_INT, "posterior samples per gradient estimate")
    learning_rate: float = setting(1e-3, POSITIVE_NUMBER, "Adam's learning rate")
    init_scale: float = setting(0.1, POSITIVE_NUMBER, "initial posterior scale b")
    variance_draws: int = setting(50, int_at_least(2),
                                  "gradient draws per variance evaluation")
    elbo_samples: int = setting(256, POSITIVE_INT, "samples of the evaluated full ELBO")
    truncation_levels: tuple = setting(tuple(range(1, 11)), non_empty_list(POSITIVE_INT),
                                       "Fourier terms N of the truncation analysis")
    truncation_draws: int = setting(200, int_at_least(2),
                                    "gradient draws per estimator in that analysis")
    reference_chunks: int = setting(32, int_at_least(2),
                                    "chunks of the pathwise reference gradient")
    reference_chunk_size: int = setting(4096, POSITIVE_INT, "samples per reference chunk")
    epochs: int = setting(200, POSITIVE_INT, "training epochs")
    snapshot_epoch: int = setting(100, NON_NEGATIVE_INT,
                                  "epoch whose posterior the truncation analysis uses")
    eval_every: int = setting(DATA_SIZE // 64, POSITIVE_INT, "steps between evaluations")
    steps_per_epoch: int = setting(DATA_SIZE // 64, POSITIVE_INT,
                                   "minibatches per epoch (each a slice of one permutation)")

    def check(self):
        if self.steps_per_epoch * self.batch_size > DATA_SIZE:
            self.fail("steps_per_epoch", f"at most {DATA_SIZE} // batch_size = "
                      f"{DATA_SIZE // self.batch_size} (an epoch uses each of the "
                      f"{DATA_SIZE} points at most once)")
        if self.snapshot_epoch > self.epochs:
            self.fail("snapshot_epoch", f"at most epochs = {self.epochs}")


# --quick: changes to the paper's setting
QUICK = {"epochs": 100, "truncation_draws": 100, "reference_chunks": 8}


def settings(quick: bool) -> LaplaceBlrSettings:
    paper = LaplaceBlrSettings()
    return paper.replace(**QUICK) if quick else paper


def fourier_terms(name: str):
    """N for a label fourier-nN (stochbp.fourier(order=2N)), else None."""
    return labels.parse(name).terms


def make_estimator(name: str):
    label = labels.parse(name)
    if label.terms is not None:
        return stochbp.fourier(order=2 * label.terms)
    return getattr(stochbp, label.estimator)()


def kl_laplace(mu, b):
    """Eq. 27: KL[Laplace(mu, b) || Laplace(0, 1)], summed over coordinates."""
    a = jnp.abs(mu)
    return jnp.sum(a + b * jnp.exp(-a / b) - jnp.log(b) - 1.0)


def loglik(A, scale=1.0):
    """f(w) = scale * sum_i log sigmoid(A_i . w), declared linear in w."""
    return stochbp.linear(lambda u: scale * jax.nn.log_sigmoid(u), A, elementwise=True)


def accuracy(scores, y):
    """Fraction of points whose label y in {-1, 1} has the sign of the score x^T mu; a
    tie (score exactly 0, as for every point at the start, mu = 0) counts 1/2 -- the
    expected accuracy of breaking it by a fair coin -- not as an error."""
    margin = scores * y
    return jnp.mean(jnp.where(margin > 0, 1.0, jnp.where(margin == 0, 0.5, 0.0)))


def posterior(params):
    return params["mu"], jax.nn.softplus(params["rho"])


def runs(s: LaplaceBlrSettings, estimators: list, seeds: list) -> list:
    return [RunSpec(f"{est}-seed{seed}", {"estimator": est, "seed": seed})
            for est in estimators for seed in seeds]


@functools.lru_cache(maxsize=1)
def _data():
    X, y = data.breast_cancer()
    dtype = jnp.result_type(float)
    return jnp.asarray(X, dtype), jnp.asarray(y, dtype)


def _batch(s: LaplaceBlrSettings, seed, step, mesh=None):
    """y_i x_i for the minibatch of a step: a slice of the epoch's permutation, split
    over the mesh's devices."""
    X, y = _data()
    n, bsz = X.shape[0], s.batch_size
    epoch, pos = step // s.steps_per_epoch, step % s.steps_per_epoch
    perm = jax.random.permutation(common.step_key(seed, epoch, common.BATCH_ORDER_STREAM), n)
    idx = jax.lax.dynamic_slice(perm, (pos * bsz,), (bsz,))
    return parallel.shard_batch(y[idx, None] * X[idx], mesh)


def neg_elbo(estimator, s: LaplaceBlrSettings):
    """(params, A, key) -> minus the minibatch ELBO (Eq. 26) with the estimator's
    gradient for the expected log-likelihood, scaled by N / |B|."""
    n = _data()[0].shape[0]

    def loss(params, A, key):
        mu, b = posterior(params)
        ell = stochbp.expectation(loglik(A, n / A.shape[0]), nd.Laplace(mu, b), key,
                                  estimator=estimator, num_samples=s.num_samples)
        return -(ell - kl_laplace(mu, b))
    return loss


def _evaluation(est_name: str, s: LaplaceBlrSettings, grad_fn, mesh=None):
    """jit((params, seed, step) -> metrics): full-data ELBO and accuracy, the gradient's
    variance on the last training batch, and (Fourier runs) the mean squared difference
    of its draws from those of each baseline at the same keys."""
    others = {name: jax.grad(neg_elbo(make_estimator(name), s)) for name in COMPARED_WITH}

    @jax.jit
    def evaluate(params, seed, step):
        Xf, yf = _data()
        A_full = yf[:, None] * Xf
        mu, b = posterior(params)
        w = nd.Laplace(mu, b).sample(common.step_key(seed, step, common.EVALUATION_STREAM),
                                     (s.elbo_samples,))
        ell = jnp.mean(jax.vmap(loglik(A_full))(w))
        A = _batch(s, seed, jnp.maximum(step - 1, 0), mesh)
        keys = jax.random.split(common.step_key(seed, step, common.VARIANCE_STREAM),
                                s.variance_draws)
        mean, logvar, draws = common.gradient_moments(lambda p, k: grad_fn(p, A, k),
                                                      params, keys)
        out = {"elbo": ell - kl_laplace(mu, b), "accuracy": accuracy(Xf @ mu, yf),
               "grad_log_variance": logvar, "grad_norm": jnp.linalg.norm(mean),
               "scale_mean": jnp.mean(b), "scale_times_max_x": jnp.max(b * jnp.max(
                   jnp.abs(Xf), axis=0))}
        if fourier_terms(est_name) is not None:
            for name, g_other in others.items():
                _, _, other = common.gradient_moments(lambda p, k: g_other(p, A, k),
                                                      params, keys)
                out[f"mse_vs_{name}"] = jnp.mean((draws - other) ** 2)
        return out
    return evaluate


@functools.lru_cache(maxsize=None)
def _compiled(est_name: str, s: LaplaceBlrSettings, mesh) -> continuous.Compiled:
    opt = optax.adam(s.learning_rate)
    loss = neg_elbo(make_estimator(est_name), s)

    def elbo_and_grad(params, seed, step):
        value, g = jax.value_and_grad(loss)(params, _batch(s, seed, step, mesh),
                                            common.step_key(seed, step))
        return -value, g

    advance = continuous.scanned(continuous.training_step(opt, elbo_and_grad))
    return continuous.Compiled(opt, advance, _evaluation(est_name, s, jax.grad(loss), mesh))


def compiled(spec: RunSpec, s: LaplaceBlrSettings) -> continuous.Compiled:
    return _compiled(spec.config["estimator"], s, parallel.current())


def initial_params(spec: RunSpec, s: LaplaceBlrSettings) -> dict:
    d = _data()[0].shape[1]
    dtype = jnp.result_type(float)
    return {"mu": jnp.zeros((d,), dtype),
            "rho": jnp.full((d,), common.softplus_inverse(s.init_scale), dtype)}


def epoch_and_snapshot(spec: RunSpec, s: LaplaceBlrSettings, state) -> dict:
    """The epoch of an evaluation and, at ``snapshot_epoch``, the posterior (mu, b)."""
    step = int(state["step"])
    out = {"epoch": step // s.steps_per_epoch}
    if step == s.snapshot_epoch * s.steps_per_epoch:
        mu, b = posterior(state["params"])
        out["snapshot"] = {"mu": np.asarray(mu).tolist(), "b": np.asarray(b).tolist()}
    return out


HOOKS = continuous.AdamHooks(compiled, initial_params, step_metric="elbo_batch",
                             extra_metrics=epoch_and_snapshot)


def _snapshot(out: Path):
    runs_ = reporting.load_runs(out)
    order = {name: i for i, name in enumerate(("fourier-n8", "fourier-n4", "pathwise",
                                                "score_function"))}
    runs_.sort(key=lambda r: (order.get(r["config"]["estimator"], len(order)),
                              r["config"]["seed"]))
    for r in runs_:
        for e in r["evals"]:
            if "snapshot" in e:
                return r["run_id"], e["epoch"], e["snapshot"]
    return None


def _batched_gradient(f, estimator, num_samples: int):
    """jit(vmap over keys of (mu, b, key) -> gradient of E_{Laplace(mu, b)}[f] in mu, b)."""
    return jax.jit(jax.vmap(jax.grad(
        lambda m, bb, k: stochbp.expectation(f, nd.Laplace(m, bb), k, estimator=estimator,
                                             num_samples=num_samples), argnums=(0, 1)),
        in_axes=(None, None, 0)))


def _truncation_row(name: str, g, ref_mean, ref_se, dim: int) -> dict:
    """Bias against the reference (norm, and z-scores with both Monte Carlo errors) and
    variance of the draws ``g`` (draws x parameters) of one estimator."""
    mean = g.mean(0)
    bias = mean - ref_mean
    se = jnp.sqrt(g.var(0, ddof=1) / g.shape[0] + ref_se ** 2)
    return {"estimator": name, "truncation": fourier_terms(name),
            "bias_norm": float(jnp.linalg.norm(bias)),
            "bias_norm_scale_only": float(jnp.linalg.norm(bias[dim:])),
            "bias_noise_norm": float(jnp.linalg.norm(se)),
            "max_abs_z": float(jnp.max(jnp.abs(bias) / se)),
            "mean_variance": float(jnp.mean(g.var(0, ddof=1))),
            "log_mean_variance": float(jnp.log(jnp.mean(g.var(0, ddof=1))))}


def analyse(out: Path, s: LaplaceBlrSettings, progress_cls) -> None:
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
    bar = progress_cls(len(s.truncation_levels) + 3, "truncation analysis")
    ref_fn = _batched_gradient(f, stochbp.pathwise(), s.reference_chunk_size)
    gm, gb = ref_fn(mu, b, jax.random.split(jax.random.PRNGKey(REFERENCE_KEY),
                                            s.reference_chunks))
    ref = jnp.concatenate([gm, gb], axis=1)
    ref_mean, ref_se = ref.mean(0), ref.std(0, ddof=1) / np.sqrt(ref.shape[0])
    bar.update(1, "pathwise reference")
    draw_keys = jax.random.split(jax.random.PRNGKey(TRUNCATION_DRAWS_KEY),
                                 s.truncation_draws)
    rows = []
    for name in [f"fourier-n{N}" for N in s.truncation_levels] + list(COMPARED_WITH):
        gm, gb = _batched_gradient(f, make_estimator(name), s.num_samples)(mu, b, draw_keys)
        rows.append(_truncation_row(name, jnp.concatenate([gm, gb], axis=1), ref_mean,
                                    ref_se, mu.shape[0]))
        bar.update(1, name)
    bar.close()
    io.write_json(path, {"theta_from": run_id, "epoch": epoch, "rows": rows,
                         "reference": {"samples": int(s.reference_chunks
                                                      * s.reference_chunk_size),
                                       "mean": np.asarray(ref_mean).tolist(),
                                       "stderr": np.asarray(ref_se).tolist()},
                         "scale_times_max_x": float(jnp.max(b * jnp.max(jnp.abs(X), 0))),
                         "draws": s.truncation_draws, "num_samples": s.num_samples})


def figures(out: Path) -> list:
    from stochbp.experiments import plots
    return plots.blr_figures(out)


def report(out: Path, rel_to: Path = None) -> str:
    from stochbp.experiments import report as rep
    return rep.blr_report(out, rel_to)


EXPERIMENT = Experiment(
    name="laplace-blr", description="Section 6.2: Bayesian logistic regression, Laplace "
    "prior and posterior, breast cancer data", estimator_names=ESTIMATORS,
    settings=settings, runs=runs, init=HOOKS.init, advance=HOOKS.advance,
    evaluate=HOOKS.evaluate, total_steps=lambda s: s.epochs * s.steps_per_epoch,
    analyse=analyse, figures=figures, report=report)

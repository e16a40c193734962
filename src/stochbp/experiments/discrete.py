"""Appendix B: discrete latent variables (Tables 1-3, Figs. 6-7 of the paper).

Four experiments, each on ``--dataset mnist|omniglot``:

* ``sbn`` (``--layers 1|2``): linear sigmoid belief networks, Table 1;
* ``bernoulli-vae``: the nonlinear Bernoulli VAE, Table 1;
* ``categorical-linear``: one linear layer with d = 20 categorical variables of K = 10
  classes, Table 2 ("one layer") and Table 3;
* ``categorical-vae``: the categorical VAE, Table 2 and Table 3.

The models, their ELBO and the importance-sampling bound are in
:mod:`stochbp.experiments.discrete_models`. Every gradient estimator comes from the
library: ``fourier-sS`` is ``stochbp.fourier()`` with ``num_samples=S`` (the paper's
BSB / CSB with S samples, Eqs. 17-18); ``rebar`` is ``stochbp.rebar(tune=True)`` and
``relax`` ``stochbp.relax()``, both with eta and the temperature (and RELAX's network)
trained online to minimise the variance of the gradient with respect to the encoder's
logits (``stochbp.variance_gradient``, Adam); ``arm``, ``disarm`` are extras; the
categorical models use ``gumbel-softmax`` (``stochbp.gumbel_softmax``, fixed temperature
``gs_temperature`` = 0.5, the final temperature of Jang et al.'s annealing schedule; no
annealing).

**The paper's setting** (the default without ``--quick``): Adam with learning rate 1e-4,
batch 100, 500 epochs on MNIST and 100 on Omniglot (``epochs=null`` picks them), 5
seeds, the whole training set (50 000 MNIST images, the Larochelle-Murray static
binarization; 24 345 Omniglot images binarized dynamically -- a fresh Bernoulli draw
of every pixel each time an image is used), the test log-likelihood by importance
sampling with 200 samples on the whole test set (Omniglot's test set binarized once,
with the fixed seed ``test_binarization_seed``). ``--quick`` keeps everything but
trains on a fixed random subset of ``train_size`` images for ``epochs`` epochs and
evaluates on ``test_size`` test images: minutes on 2 CPU cores, and **not comparable**
with the paper's 500-epoch numbers.

**Metrics.** A runner "step" is one epoch. Per epoch: the mean over its minibatches of
a single-sample ELBO estimate at binary samples (the same for every estimator; the
training surrogate of gumbel-softmax is evaluated at relaxed samples and is not an
ELBO), and the wall time of the epoch (compilation excluded, measured separately). Per
evaluation (every ``eval_every`` epochs): the log-variance of the gradient as the paper
estimates it, from Adam's bias-corrected moment estimates (log of the mean over
parameters of v_hat - m_hat^2), and directly, from ``variance_draws`` gradient draws at
the current parameters on a fixed training batch (log of the mean over parameters of
the sample variance), both for all parameters and for the encoder only; every
``test_every`` epochs and at the end, the test log-likelihood (IS, ``is_samples``
samples) and the test ELBO.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import optax

import stochbp
from stochbp.experiments import common, datasets
from stochbp.experiments import discrete_models as dm
from stochbp.experiments.runner import Experiment, RunSpec, UsageError

BERNOULLI_ESTIMATORS = ("fourier-s1", "fourier-s5", "fourier-s10", "rebar", "relax", "arm",
                        "disarm")
CATEGORICAL_ESTIMATORS = ("fourier-s1", "fourier-s5", "fourier-s10", "gumbel-softmax")
PAPER_EPOCHS = {"mnist": 500, "omniglot": 100}
DATASETS = tuple(datasets.FILES)


# ------------------------------------------------------------------ settings
def _settings_for(kind: str, layers: Optional[int]):
    def settings(quick: bool) -> dict:
        base = {"dataset": "mnist", "data_dir": None, "batch_size": 100,
                "learning_rate": 1e-4, "is_samples": 200, "is_chunk": 50, "eval_every": 1,
                "variance_draws": 20, "test_binarization_seed": 0, "split_seed": 0}
        if layers is not None:
            base["layers"] = layers
        if kind.startswith("categorical"):
            base |= {"variables": 20, "classes": 10, "gs_temperature": 0.5}
        else:
            base |= {"latent": 200, "relax_temperature": 0.5, "relax_hidden": 200,
                     "cv_learning_rate": 1e-3}
        if kind.endswith("vae"):
            base["hidden"] = 200
        # Fourier substitutions CHUNK examples at a time (a speed setting only; results
        # are identical): measured faster on 2 CPU cores for the VAEs, whose decoder
        # matmuls on n d K substituted latents outgrow the cache; null elsewhere
        base["chunk_size"] = 8 if kind.endswith("vae") else None
        if quick:
            return {**base, "epochs": 5, "train_size": 5000, "test_size": 1000,
                    "test_every": 1, "variance_draws": 10}
        return {**base, "epochs": None, "train_size": None, "test_size": None,
                "test_every": 25}
    return settings


def epochs_of(s: dict) -> int:
    return int(s["epochs"]) if s["epochs"] is not None else PAPER_EPOCHS[s["dataset"]]


def spec_of(kind: str, s: dict) -> dm.ModelSpec:
    return dm.ModelSpec(kind, int(s.get("layers", 1)), latent=int(s.get("latent", 200)),
                        hidden=int(s.get("hidden", 200)), variables=int(s.get("variables", 20)),
                        classes=int(s.get("classes", 10)),
                        chunk_size=s.get("chunk_size"))


# ------------------------------------------------------------------ data
@functools.lru_cache(maxsize=4)
def _raw(name: str, data_dir: Optional[str]) -> dict:
    return datasets.load(name, data_dir)


def _subset(n_total: int, size, seed: int) -> np.ndarray:
    if size is None or size >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:int(size)])


@functools.lru_cache(maxsize=4)
def load_data(name: str, data_dir: Optional[str], train_size, test_size, split_seed: int,
              test_binarization_seed: int) -> dict:
    """{'train': (N, 784) float32 (binary for MNIST, grey for Omniglot), 'test': binary,
    'dynamic': whether training batches are binarized on the fly, 'mean': pixel means}."""
    raw = _raw(name, data_dir)
    train = raw["train"][_subset(len(raw["train"]), train_size, split_seed)]
    test = raw["test"][_subset(len(raw["test"]), test_size, split_seed + 1)]
    dynamic = name == "omniglot"
    if dynamic:
        test = np.asarray(datasets.binarize(test, jax.random.PRNGKey(test_binarization_seed)))
    dm.check_binary(test, f"{name} test images")
    if not dynamic:
        dm.check_binary(train, f"{name} training images")
    return {"train": train.astype(np.float32), "test": test.astype(np.float32),
            "dynamic": dynamic, "mean": train.mean(0)}


def _data(s: dict) -> dict:
    return load_data(s["dataset"], s["data_dir"], s["train_size"], s["test_size"],
                     int(s["split_seed"]), int(s["test_binarization_seed"]))


def steps_per_epoch(s: dict) -> int:
    return len(_data(s)["train"]) // int(s["batch_size"])


# ------------------------------------------------------------------ estimators
def make_estimator(name: str, s: dict):
    """(estimator, num_samples, tuned) for an estimator name."""
    if name.startswith("fourier-s"):
        return stochbp.fourier(), int(name[len("fourier-s"):]), False
    if name == "rebar":
        return stochbp.rebar(temperature=s["relax_temperature"], tune=True), 1, True
    if name == "relax":
        return stochbp.relax(temperature=s["relax_temperature"],
                             hidden=(int(s["relax_hidden"]),)), 1, True
    if name in ("arm", "disarm"):
        return getattr(stochbp, name)(), 1, False
    if name == "gumbel-softmax":
        return stochbp.gumbel_softmax(s["gs_temperature"]), 1, False
    raise ValueError(f"unknown estimator {name!r}")


def _nested(name: str) -> bool:
    """Estimators that differentiate f at relaxed samples need the nested two-layer f."""
    return name in ("rebar", "relax")


def _check_for(kind: str, estimator_names: tuple):
    def check(s: dict) -> None:
        if s.get("dataset") not in DATASETS:
            raise UsageError(f"--dataset must be one of {', '.join(DATASETS)}; got "
                             f"dataset={s.get('dataset')!r}")
        if "layers" in s and s["layers"] not in (1, 2):
            raise UsageError(f"--layers must be 1 or 2; got layers={s['layers']!r}")
        for key in ("batch_size", "latent", "hidden", "variables", "classes", "is_samples",
                    "is_chunk", "eval_every", "variance_draws", "test_every"):
            if key in s and (not isinstance(s[key], int) or isinstance(s[key], bool)
                             or s[key] < 1):
                raise UsageError(f"{key} must be a positive integer; got {key}={s[key]!r}")
        if s.get("chunk_size") is not None and (not isinstance(s["chunk_size"], int)
                                                or isinstance(s["chunk_size"], bool)
                                                or s["chunk_size"] < 1):
            raise UsageError(f"chunk_size must be a positive integer or null; got "
                             f"chunk_size={s['chunk_size']!r}")
        if s.get("epochs") is not None and (not isinstance(s["epochs"], int)
                                            or s["epochs"] < 1):
            raise UsageError(f"epochs must be a positive integer or null (the paper's); got "
                             f"epochs={s['epochs']!r}")
        if s.get("variance_draws", 2) < 2:
            raise UsageError("variance_draws must be at least 2")
        for key in ("gs_temperature", "relax_temperature", "learning_rate",
                    "cv_learning_rate"):
            if key in s and not (isinstance(s[key], (int, float)) and s[key] > 0):
                raise UsageError(f"{key} must be a positive number; got {key}={s[key]!r}")
        try:
            spec_of(kind, s)
            for name in estimator_names:
                make_estimator(name, s)
            data = _data(s)
        except (ValueError, TypeError, datasets.DataNotFound) as err:
            raise UsageError(str(err)) from None
        if len(data["train"]) < s["batch_size"]:
            raise UsageError(f"batch_size={s['batch_size']} is larger than the "
                             f"{len(data['train'])} training images")
    return check


# ------------------------------------------------------------------ compiled functions
def _settings_key(s: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in s.items()))


def _tree_flat(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.concatenate([jnp.ravel(x) for x in leaves]) if leaves else jnp.zeros(0)


def _adam_state(opt_state):
    for part in opt_state:
        if isinstance(part, optax.ScaleByAdamState):
            return part
    raise TypeError("no Adam state found")


def _encoder(tree):
    return {k: tree[k] for k in ("enc", "enc2") if k in tree}


class _Functions:
    """Jitted pieces of one (experiment, estimator, settings) combination."""

    def __init__(self, kind: str, est_name: str, s: dict):
        self.kind, self.est_name, self.s = kind, est_name, s
        self.spec = spec_of(kind, s)
        self.est, self.S, self.tuned = make_estimator(est_name, s)
        self.nested = _nested(est_name)
        self.opt = optax.adam(s["learning_rate"])
        self.cv_opt = optax.adam(s.get("cv_learning_rate", 1e-3))
        data = _data(s)
        self.dynamic = data["dynamic"]
        self.spe = steps_per_epoch(s)
        self.bsz = int(s["batch_size"])
        self._compiled = None
        self.epoch_fn = jax.jit(self._epoch)
        self.evaluate_fn = jax.jit(self._evaluate)
        self.test_fn = jax.jit(self._test)

    # -- the objective
    def inner(self, cv):
        if self.spec.layers == 1:
            return None
        return dm.Inner(self.est, None if cv is None else cv["inner"], nested=self.nested)

    def loss(self, params, cv, x, key):
        value, _ = dm.surrogate_elbo(self.spec, params, x, key, estimator=self.est,
                                     num_samples=self.S,
                                     state=None if cv is None else cv["outer"],
                                     inner=self.inner(cv))
        return -value

    def cv_gradient(self, params, cv, x, key):
        """Gradient of the variance of the logit gradients w.r.t. the control variates,
        for the same draws as the training step (the key is split as in surrogate_elbo)."""
        spec, params = self.spec, jax.lax.stop_gradient(params)
        k_outer, k_inner, k_z1, k_layer2 = jax.random.split(key, 4)
        logits = dm.encoder_logits(spec, params, x)
        f = dm.batch_f(spec, params, x, k_inner, self.inner(cv))
        make = functools.partial(dm.posterior, spec)
        _, g_outer = stochbp.variance_gradient(f, make, logits, k_outer, cv["outer"],
                                               estimator=self.est, num_samples=self.S)
        grads = {"outer": g_outer}
        if spec.layers == 2:
            z1 = dm.posterior(spec, logits).sample(k_z1).astype(logits.dtype)
            f2, l2 = dm.inner_problem(spec, params, z1)
            _, grads["inner"] = stochbp.variance_gradient(
                f2, lambda l: nd.Bernoulli(logits=l), l2, k_layer2, cv["inner"],
                estimator=self.est)
        return grads

    def init_cv(self, params, x):
        if not self.tuned:
            return None
        spec = self.spec
        logits = dm.encoder_logits(spec, params, x)
        inner_stub = dm.Inner(self.est, None, nested=True) if spec.layers == 2 else None
        f = dm.batch_f(spec, params, x, jax.random.PRNGKey(0), inner_stub)
        cv = {"outer": self.est.init(f, dm.posterior(spec, logits), jax.random.PRNGKey(1))}
        if spec.layers == 2:
            z1 = jnp.zeros(logits.shape, logits.dtype)
            f2, l2 = dm.inner_problem(spec, params, z1)
            cv["inner"] = self.est.init(f2, nd.Bernoulli(logits=l2), jax.random.PRNGKey(2))
        return cv

    # -- one epoch, jitted
    def _batch(self, train, seed, epoch, i, step):
        perm = jax.random.permutation(common.step_key(seed, epoch, stream=2), train.shape[0])
        idx = jax.lax.dynamic_slice(perm, (i * self.bsz,), (self.bsz,))
        x = train[idx]
        if self.dynamic:
            x = datasets.binarize(x, common.step_key(seed, step, stream=5)).astype(x.dtype)
        return x

    def _epoch(self, params, opt_state, cv, cv_opt_state, train, seed, epoch):
        def one(carry, i):
            params, opt_state, cv, cv_opt_state = carry
            step = epoch * self.spe + i
            x = self._batch(train, seed, epoch, i, step)
            key = common.step_key(seed, step)
            elbo = jnp.mean(dm.elbo_estimate(self.spec, params, x,
                                             common.step_key(seed, step, stream=6)))
            g = jax.grad(self.loss)(params, cv, x, key)
            updates, opt_state = self.opt.update(g, opt_state, params)
            if self.tuned:
                cv_g = self.cv_gradient(params, cv, x, key)
                cv_updates, cv_opt_state = self.cv_opt.update(cv_g, cv_opt_state, cv)
                cv = optax.apply_updates(cv, cv_updates)
            params = optax.apply_updates(params, updates)
            return (params, opt_state, cv, cv_opt_state), elbo

        carry, elbos = jax.lax.scan(one, (params, opt_state, cv, cv_opt_state),
                                    jnp.arange(self.spe))
        return carry + (elbos,)

    def run_epoch(self, state: dict, train, seed: int):
        """One epoch; returns (state, elbos, seconds, compile seconds or None)."""
        args = common.strong((state["params"], state["opt_state"], state["cv"],
                              state["cv_opt_state"])) + (train, jnp.int32(seed),
                                                         jnp.int32(state["epoch"]))
        compile_s = None
        if self._compiled is None:
            t0 = time.perf_counter()
            self._compiled = self.epoch_fn.lower(*args).compile()
            compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        params, opt_state, cv, cv_opt_state, elbos = jax.block_until_ready(
            self._compiled(*args))
        seconds = time.perf_counter() - t0
        new = {"params": params, "opt_state": opt_state, "cv": cv,
               "cv_opt_state": cv_opt_state, "epoch": int(state["epoch"]) + 1}
        return new, np.asarray(elbos), seconds, compile_s

    # -- evaluation, jitted
    def _evaluate(self, params, opt_state, cv, x, key):
        adam = _adam_state(opt_state)
        count = adam.count.astype(x.dtype)
        b1, b2 = 0.9, 0.999  # optax.adam defaults

        def adam_var(mu, nu):
            m = _tree_flat(mu) / (1 - b1 ** count)
            v = _tree_flat(nu) / (1 - b2 ** count)
            return jnp.log(jnp.mean(v - m ** 2))

        keys = jax.random.split(key, int(self.s["variance_draws"]))
        draws = jax.lax.map(lambda k: jax.grad(self.loss)(params, cv, x, k), keys)

        def direct(tree):
            flat = jax.vmap(_tree_flat)(tree)
            return jnp.log(jnp.mean(jnp.var(flat, axis=0, ddof=1)))

        out = {"adam_log_variance": adam_var(adam.mu, adam.nu),
               "adam_log_variance_encoder": adam_var(_encoder(adam.mu), _encoder(adam.nu)),
               "grad_log_variance": direct(draws),
               "grad_log_variance_encoder": direct(_encoder(draws))}
        if cv is not None:
            out["cv_temperature"] = jnp.exp(cv["outer"].log_temperature)
            out["cv_eta"] = cv["outer"].eta
        return out

    def _test(self, params, test, key):
        spec, M = self.spec, int(self.s["is_samples"])
        chunk = max(1, int(self.s["is_chunk"]))
        lw = lambda xs, k: dm.log_weights(spec, params, xs, k, M)  # noqa: E731
        ll = dm.chunked(lambda xs, k: dm.log_mean_exp(lw(xs, k)), test, key, chunk)
        elbo = dm.chunked(lambda xs, k: jnp.mean(lw(xs, k), axis=1), test, key, chunk)
        return {"test_loglik": jnp.mean(ll), "test_elbo": jnp.mean(elbo)}


@functools.lru_cache(maxsize=None)
def _functions(kind: str, est_name: str, skey: tuple) -> _Functions:
    return _Functions(kind, est_name, dict(skey))


def _fns(kind: str, spec: RunSpec, s: dict) -> _Functions:
    return _functions(kind, spec.config["estimator"], _settings_key(s))


def _train_array(s):
    return jnp.asarray(_data(s)["train"], jnp.result_type(float))


def _variance_batch(s):
    data = _data(s)
    x = jnp.asarray(data["train"][:int(s["batch_size"])], jnp.result_type(float))
    if data["dynamic"]:
        x = datasets.binarize(x, jax.random.PRNGKey(10_000 + int(s["split_seed"])))
    return x.astype(jnp.result_type(float))


# ------------------------------------------------------------------ Experiment hooks
def _make(kind: str, name: str, description: str, layers: Optional[int]):
    estimator_names = CATEGORICAL_ESTIMATORS if kind.startswith("categorical") \
        else BERNOULLI_ESTIMATORS
    quick = ("fourier-s1", "gumbel-softmax") if kind.startswith("categorical") else \
        ("fourier-s1", "rebar", "relax")
    check = _check_for(kind, estimator_names)

    def runs(s: dict, estimators: list, seeds: list) -> list:
        check(s)
        return [RunSpec(f"{est}-seed{seed}",
                        {"estimator": est, "seed": seed, "model": kind,
                         "layers": int(s.get("layers", 1)), "dataset": s["dataset"]})
                for est in estimators for seed in seeds]

    def init(spec: RunSpec, s: dict):
        fns = _fns(kind, spec, s)
        seed = spec.config["seed"]
        params = dm.init_params(fns.spec, jax.random.PRNGKey(seed), _data(s)["mean"])
        cv = fns.init_cv(params, _variance_batch(s))
        return {"params": params, "opt_state": fns.opt.init(params), "cv": cv,
                "cv_opt_state": None if cv is None else fns.cv_opt.init(cv), "epoch": 0}

    def advance(spec: RunSpec, s: dict, state, n: int):
        fns = _fns(kind, spec, s)
        train = _train_array(s)
        rows = []
        for _ in range(n):
            epoch = int(state["epoch"])
            state, elbos, seconds, compile_s = fns.run_epoch(state, train,
                                                             spec.config["seed"])
            row = {"step": epoch, "epoch": epoch + 1, "train_elbo": float(np.mean(elbos)),
                   "train_elbo_last_batch": float(elbos[-1]), "epoch_seconds": seconds,
                   "steps_per_epoch": fns.spe}
            if compile_s is not None:
                row["compile_seconds"] = compile_s
            rows.append(row)
        return state, rows

    def evaluate(spec: RunSpec, s: dict, state) -> dict:
        fns = _fns(kind, spec, s)
        seed, epoch = spec.config["seed"], int(state["epoch"])
        params, opt_state, cv = common.strong((state["params"], state["opt_state"],
                                               state["cv"]))
        out = {"epoch": epoch}
        if epoch > 0:  # Adam's moments exist only after a step
            out.update(common.floats(fns.evaluate_fn(
                params, opt_state, cv, _variance_batch(s),
                common.step_key(seed, epoch, stream=1))))
        if epoch == epochs_of(s) or (epoch > 0 and epoch % int(s["test_every"]) == 0):
            test = jnp.asarray(_data(s)["test"], jnp.result_type(float))
            t0 = time.perf_counter()
            out.update(common.floats(fns.test_fn(params, test,
                                                 common.step_key(seed, epoch, stream=3))))
            out["test_seconds"] = time.perf_counter() - t0
        return out

    def figures(out: Path) -> list:
        from stochbp.experiments import discrete_report
        return discrete_report.figures(out)

    def report(out: Path, rel_to: Path = None) -> str:
        from stochbp.experiments import discrete_report
        return discrete_report.report(out, rel_to)

    options = ("dataset", "data_dir") + (("layers",) if layers is not None else ())
    return Experiment(
        name=name, description=description, estimator_names=estimator_names,
        settings=_settings_for(kind, layers), runs=runs, init=init, advance=advance,
        evaluate=evaluate, total_steps=epochs_of, figures=figures, report=report,
        options=options, check=check, quick_estimators=quick)


SBN = _make("sbn", "sbn", "Appendix B, Table 1: linear sigmoid belief networks (1 or 2 "
            "stochastic layers of 200 Bernoulli units)", layers=1)
BERNOULLI_VAE = _make("bernoulli_vae", "bernoulli-vae", "Appendix B, Table 1: nonlinear "
                      "Bernoulli VAE (200 Bernoulli units)", layers=None)
CATEGORICAL_LINEAR = _make("categorical_linear", "categorical-linear", "Appendix B, Tables 2-3:"
                           " one linear layer, 20 categorical variables of 10 classes",
                           layers=None)
CATEGORICAL_VAE = _make("categorical_vae", "categorical-vae", "Appendix B, Tables 2-3: "
                        "categorical VAE, 20 variables of 10 classes", layers=None)
EXPERIMENTS = (SBN, BERNOULLI_VAE, CATEGORICAL_LINEAR, CATEGORICAL_VAE)

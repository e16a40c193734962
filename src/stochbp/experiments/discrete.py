"""Appendix B: discrete latent variables (Tables 1-3, Figs. 6-7 of the paper).

Four experiments, each on ``--dataset mnist|omniglot``:

* ``sbn`` (``--layers 1|2``): linear sigmoid belief networks, Table 1;
* ``bernoulli-vae``: the nonlinear Bernoulli VAE, Table 1;
* ``categorical-linear``: one linear layer with d = 20 categorical variables of K = 10
  classes, Table 2 ("one layer") and Table 3;
* ``categorical-vae``: the categorical VAE, Table 2 and Table 3.

The models, their ELBO and the importance-sampling bound are in
:mod:`stochbp.experiments.discrete_models`. Every gradient estimator comes from the
library, labelled as :mod:`stochbp.experiments.labels` says: ``fourier-sS`` is
``stochbp.fourier()`` with ``num_samples=S`` (the paper's BSB / CSB with S samples,
Eqs. 17-18); ``rebar`` is ``stochbp.rebar(tune=True)`` and
``relax`` ``stochbp.relax()``, both with eta and the temperature (and RELAX's network)
trained online to minimise the variance of the gradient with respect to the encoder's
logits (``stochbp.variance_gradient``, Adam); ``arm``, ``disarm`` are extras; the
categorical models use ``gumbel_softmax`` (``stochbp.gumbel_softmax``, fixed temperature
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
training surrogate of gumbel_softmax is evaluated at relaxed samples and is not an
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

import dataclasses
import functools
import time
from pathlib import Path
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import optax

import stochbp
from stochbp.experiments import common, datasets, labels, parallel
from stochbp.experiments import discrete_models as dm
from stochbp.experiments.errors import UsageError
from stochbp.experiments.runner import Experiment, RunSpec
from stochbp.experiments.settings import (NON_NEGATIVE_INT, POSITIVE_INT, POSITIVE_NUMBER,
                                          TEXT, Settings, int_at_least, one_of, optional,
                                          setting)

BERNOULLI_ESTIMATORS = ("fourier-s1", "fourier-s5", "fourier-s10", "rebar", "relax", "arm",
                        "disarm")
CATEGORICAL_ESTIMATORS = ("fourier-s1", "fourier-s5", "fourier-s10", "gumbel_softmax")
# the default --estimators under --quick: Fourier with one sample and the paper's baselines
QUICK_BERNOULLI = ("fourier-s1", "rebar", "relax")
QUICK_CATEGORICAL = ("fourier-s1", "gumbel_softmax")
# estimators whose control variates (eta, temperature, RELAX's network) are trained online
TUNED = ("rebar", "relax")
# estimators that differentiate f at relaxed samples, so need the nested two-layer f
NESTED = ("rebar", "relax")
PAPER_EPOCHS = {"mnist": 500, "omniglot": 100}
DATASETS = tuple(datasets.FILES)
ADAM_B1, ADAM_B2 = 0.9, 0.999  # optax.adam's defaults, written out for _adam_log_variance
CV_LEARNING_RATE = 1e-3  # Adam's learning rate for the control variates
# fixed keys: the stub f and the states of init_cv, and the binarization of the fixed
# variance batch (this offset plus split_seed)
CV_STUB_KEY, CV_OUTER_KEY, CV_INNER_KEY = 0, 1, 2
VARIANCE_BATCH_KEY_OFFSET = 10_000
TEST_SUBSET_SEED_OFFSET = 1  # the test subset's seed is split_seed + this


# ------------------------------------------------------------------ settings
@dataclasses.dataclass(frozen=True)
class DiscreteSettings(Settings):
    """Settings every Appendix B experiment has (defaults: the paper's setting)."""

    kind: ClassVar[str] = ""  # the model, one of discrete_models.KINDS
    dataset: str = setting("mnist", one_of(*DATASETS), "training and test data")
    data_dir: Optional[str] = setting(None, optional(TEXT, "the default search"),
                                      "folder holding the .npz files")
    batch_size: int = setting(100, POSITIVE_INT, "minibatch size")
    learning_rate: float = setting(1e-4, POSITIVE_NUMBER, "Adam's learning rate")
    is_samples: int = setting(200, POSITIVE_INT,
                              "importance samples of the test log-likelihood")
    is_chunk: int = setting(50, POSITIVE_INT, "test images per importance-sampling chunk")
    eval_every: int = setting(1, POSITIVE_INT, "epochs between evaluations")
    variance_draws: int = setting(20, int_at_least(2),
                                  "gradient draws per variance evaluation")
    test_binarization_seed: int = setting(0, NON_NEGATIVE_INT,
                                          "seed of Omniglot's fixed test binarization")
    split_seed: int = setting(0, NON_NEGATIVE_INT, "seed of the train/test subsets")
    # Fourier substitutions CHUNK examples at a time (a speed setting only; results are
    # identical): measured faster on 2 CPU cores for the VAEs, whose decoder matmuls on
    # n d K substituted latents outgrow the cache; null elsewhere
    chunk_size: Optional[int] = setting(None, optional(POSITIVE_INT, "the whole batch"),
                                        "examples per Fourier substitution chunk")
    epochs: Optional[int] = setting(None, optional(POSITIVE_INT, "the paper's"),
                                    "training epochs")
    train_size: Optional[int] = setting(None, optional(POSITIVE_INT, "all"),
                                        "training images (a fixed random subset)")
    test_size: Optional[int] = setting(None, optional(POSITIVE_INT, "all"),
                                       "test images (a fixed random subset)")
    test_every: int = setting(25, POSITIVE_INT, "epochs between test evaluations")

    @property
    def total_epochs(self) -> int:
        return self.epochs if self.epochs is not None else PAPER_EPOCHS[self.dataset]

    def model_spec(self) -> dm.ModelSpec:
        sizes = {name: getattr(self, name) for name in ("layers", "latent", "hidden",
                                                       "variables", "classes")
                 if hasattr(self, name)}
        return dm.ModelSpec(self.kind, chunk_size=self.chunk_size, **sizes)


@dataclasses.dataclass(frozen=True)
class BernoulliSettings(DiscreteSettings):
    latent: int = setting(200, POSITIVE_INT, "Bernoulli units per stochastic layer")
    relax_temperature: float = setting(0.5, POSITIVE_NUMBER,
                                       "initial temperature of rebar and relax")
    relax_hidden: int = setting(200, POSITIVE_INT, "hidden units of RELAX's network")
    cv_learning_rate: float = setting(CV_LEARNING_RATE, POSITIVE_NUMBER,
                                      "Adam's learning rate for the control variates")


@dataclasses.dataclass(frozen=True)
class SbnSettings(BernoulliSettings):
    kind: ClassVar[str] = "sbn"
    layers: int = setting(1, one_of(1, 2), "stochastic layers")


@dataclasses.dataclass(frozen=True)
class BernoulliVaeSettings(BernoulliSettings):
    kind: ClassVar[str] = "bernoulli_vae"
    hidden: int = setting(200, POSITIVE_INT, "tanh units per deterministic layer")
    chunk_size: Optional[int] = setting(8, optional(POSITIVE_INT, "the whole batch"),
                                        "examples per Fourier substitution chunk")


@dataclasses.dataclass(frozen=True)
class CategoricalSettings(DiscreteSettings):
    kind: ClassVar[str] = "categorical_linear"
    variables: int = setting(20, POSITIVE_INT, "categorical variables d")
    classes: int = setting(10, int_at_least(2), "classes K of each variable")
    gs_temperature: float = setting(0.5, POSITIVE_NUMBER,
                                    "gumbel_softmax's (fixed) temperature")


@dataclasses.dataclass(frozen=True)
class CategoricalVaeSettings(CategoricalSettings):
    kind: ClassVar[str] = "categorical_vae"
    hidden: int = setting(200, POSITIVE_INT, "tanh units per deterministic layer")
    chunk_size: Optional[int] = setting(8, optional(POSITIVE_INT, "the whole batch"),
                                        "examples per Fourier substitution chunk")


# --quick: a fixed random subset of the data, a few epochs, every epoch tested
QUICK = {"epochs": 5, "train_size": 5000, "test_size": 1000, "test_every": 1,
         "variance_draws": 10}


def _presets(settings_type):
    def settings(quick: bool) -> DiscreteSettings:
        paper = settings_type()
        return paper.replace(**QUICK) if quick else paper
    return settings


def epochs_of(s: DiscreteSettings) -> int:
    return s.total_epochs


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
    test = raw["test"][_subset(len(raw["test"]), test_size,
                               split_seed + TEST_SUBSET_SEED_OFFSET)]
    dynamic = name == "omniglot"
    if dynamic:
        test = np.asarray(datasets.binarize(test, jax.random.PRNGKey(test_binarization_seed)))
    dm.check_binary(test, f"{name} test images")
    if not dynamic:
        dm.check_binary(train, f"{name} training images")
    return {"train": train.astype(np.float32), "test": test.astype(np.float32),
            "dynamic": dynamic, "mean": train.mean(0)}


def _data(s: DiscreteSettings) -> dict:
    return load_data(s.dataset, s.data_dir, s.train_size, s.test_size, s.split_seed,
                     s.test_binarization_seed)


def steps_per_epoch(s: DiscreteSettings) -> int:
    return len(_data(s)["train"]) // s.batch_size


def _train_array(s: DiscreteSettings):
    return jnp.asarray(_data(s)["train"], jnp.result_type(float))


def _test_array(s: DiscreteSettings):
    return jnp.asarray(_data(s)["test"], jnp.result_type(float))


def _variance_batch(s: DiscreteSettings):
    """The fixed training batch of the variance evaluations: the first batch_size
    images (binarized once, with a fixed key, for Omniglot)."""
    data = _data(s)
    x = jnp.asarray(data["train"][:s.batch_size], jnp.result_type(float))
    if data["dynamic"]:
        x = datasets.binarize(x, jax.random.PRNGKey(VARIANCE_BATCH_KEY_OFFSET
                                                     + s.split_seed))
    return x.astype(jnp.result_type(float))


def check_data(s: DiscreteSettings, estimator_names: tuple) -> None:
    """What the settings' own validation cannot see: the model and estimators build,
    the data loads and holds at least one batch. Raises UsageError."""
    try:
        s.model_spec()
        for name in estimator_names:
            make_estimator(name, s)
        data = _data(s)
    except (ValueError, TypeError, datasets.DataNotFound) as err:
        raise UsageError(str(err)) from None
    if len(data["train"]) < s.batch_size:
        raise UsageError(f"batch_size={s.batch_size} is larger than the "
                         f"{len(data['train'])} training images")


# ------------------------------------------------------------------ estimators
def make_estimator(name: str, s: DiscreteSettings):
    """(estimator, num_samples, tuned) for an estimator label."""
    label = labels.parse(name)
    if label.estimator == "fourier":
        return stochbp.fourier(), label.samples or 1, False
    if label.estimator == "rebar":
        return stochbp.rebar(temperature=s.relax_temperature, tune=True), 1, True
    if label.estimator == "relax":
        return stochbp.relax(temperature=s.relax_temperature,
                             hidden=(s.relax_hidden,)), 1, True
    if label.estimator in ("arm", "disarm"):
        return getattr(stochbp, label.estimator)(), 1, False
    if label.estimator == "gumbel_softmax":
        return stochbp.gumbel_softmax(s.gs_temperature), 1, False
    raise ValueError(f"unknown estimator {name!r}")


# ------------------------------------------------------------------ compiled functions
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


def _adam_log_variance(mu, nu, count):
    """log of the mean over parameters of v_hat - m_hat^2, Adam's bias-corrected first
    and second moment estimates after ``count`` steps."""
    m = _tree_flat(mu) / (1 - ADAM_B1 ** count)
    v = _tree_flat(nu) / (1 - ADAM_B2 ** count)
    return jnp.log(jnp.mean(v - m ** 2))


def _draws_log_variance(draws):
    """log of the mean over parameters of the sample variance over the leading axis."""
    flat = jax.vmap(_tree_flat)(draws)
    return jnp.log(jnp.mean(jnp.var(flat, axis=0, ddof=1)))


class _Functions:
    """Jitted pieces of one (settings, estimator, mesh) combination. Each training
    batch (and the fixed variance batch) is split over the mesh's devices along its
    examples (``parallel.shard_batch``); parameters and states are replicated."""

    def __init__(self, est_name: str, s: DiscreteSettings, mesh=None):
        self.est_name, self.s = est_name, s
        self.mesh = mesh if mesh is not None else parallel.current()
        self.spec = s.model_spec()
        self.est, self.S, self.tuned = make_estimator(est_name, s)
        self.nested = labels.parse(est_name).estimator in NESTED
        self.opt = optax.adam(s.learning_rate, b1=ADAM_B1, b2=ADAM_B2)
        self.cv_opt = optax.adam(getattr(s, "cv_learning_rate", CV_LEARNING_RATE))
        self.dynamic = _data(s)["dynamic"]
        self.spe = steps_per_epoch(s)
        self.bsz = s.batch_size
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
        """The control-variate states of a tuned estimator (None otherwise): one for the
        outer layer, and for two layers one for the inner."""
        if not self.tuned:
            return None
        spec = self.spec
        logits = dm.encoder_logits(spec, params, x)
        inner_stub = dm.Inner(self.est, None, nested=True) if spec.layers == 2 else None
        f = dm.batch_f(spec, params, x, jax.random.PRNGKey(CV_STUB_KEY), inner_stub)
        cv = {"outer": self.est.init(f, dm.posterior(spec, logits),
                                     jax.random.PRNGKey(CV_OUTER_KEY))}
        if spec.layers == 2:
            z1 = jnp.zeros(logits.shape, logits.dtype)
            f2, l2 = dm.inner_problem(spec, params, z1)
            cv["inner"] = self.est.init(f2, nd.Bernoulli(logits=l2),
                                        jax.random.PRNGKey(CV_INNER_KEY))
        return cv

    # -- one epoch, jitted
    def _batch(self, train, seed, epoch, i, step):
        perm = jax.random.permutation(
            common.step_key(seed, epoch, common.BATCH_ORDER_STREAM), train.shape[0])
        idx = jax.lax.dynamic_slice(perm, (i * self.bsz,), (self.bsz,))
        x = train[idx]
        if self.dynamic:
            x = datasets.binarize(
                x, common.step_key(seed, step, common.BINARIZE_STREAM)).astype(x.dtype)
        return parallel.shard_batch(x, self.mesh)

    def _train_step(self, carry, x, seed, step):
        """One Adam step of the parameters (and of the control variates if tuned);
        returns the new carry and the single-sample ELBO estimate logged for it."""
        params, opt_state, cv, cv_opt_state = carry
        key = common.step_key(seed, step)
        elbo = jnp.mean(dm.elbo_estimate(self.spec, params, x,
                                         common.step_key(seed, step, common.MONITOR_STREAM)))
        g = jax.grad(self.loss)(params, cv, x, key)
        updates, opt_state = self.opt.update(g, opt_state, params)
        if self.tuned:
            cv_g = self.cv_gradient(params, cv, x, key)
            cv_updates, cv_opt_state = self.cv_opt.update(cv_g, cv_opt_state, cv)
            cv = optax.apply_updates(cv, cv_updates)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, cv, cv_opt_state), elbo

    def _epoch(self, params, opt_state, cv, cv_opt_state, train, seed, epoch):
        def one(carry, i):
            step = epoch * self.spe + i
            return self._train_step(carry, self._batch(train, seed, epoch, i, step), seed,
                                    step)

        carry, elbos = jax.lax.scan(one, (params, opt_state, cv, cv_opt_state),
                                    jnp.arange(self.spe))
        return carry + (elbos,)

    def run_epoch(self, state: dict, train, seed: int):
        """One epoch; returns (state, elbos, seconds, compile seconds or None)."""
        args = parallel.replicate(
            common.strong((state["params"], state["opt_state"], state["cv"],
                           state["cv_opt_state"])) + (train, jnp.int32(seed),
                                                      jnp.int32(state["epoch"])), self.mesh)
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
        return new, parallel.to_host(elbos), seconds, compile_s

    # -- evaluation, jitted
    def _evaluate(self, params, opt_state, cv, x, key):
        x = parallel.shard_batch(x, self.mesh)
        adam = _adam_state(opt_state)
        count = adam.count.astype(x.dtype)
        keys = jax.random.split(key, self.s.variance_draws)
        draws = jax.lax.map(lambda k: jax.grad(self.loss)(params, cv, x, k), keys)
        out = {"adam_log_variance": _adam_log_variance(adam.mu, adam.nu, count),
               "adam_log_variance_encoder": _adam_log_variance(
                   _encoder(adam.mu), _encoder(adam.nu), count),
               "grad_log_variance": _draws_log_variance(draws),
               "grad_log_variance_encoder": _draws_log_variance(_encoder(draws))}
        if cv is not None:
            out["cv_temperature"] = jnp.exp(cv["outer"].log_temperature)
            out["cv_eta"] = cv["outer"].eta
        return out

    def _test(self, params, test, key):
        spec, M = self.spec, self.s.is_samples
        chunk = max(1, self.s.is_chunk)
        lw = lambda xs, k: dm.log_weights(spec, params, xs, k, M)  # noqa: E731
        ll = dm.chunked(lambda xs, k: dm.log_mean_exp(lw(xs, k)), test, key, chunk)
        elbo = dm.chunked(lambda xs, k: jnp.mean(lw(xs, k), axis=1), test, key, chunk)
        return {"test_loglik": jnp.mean(ll), "test_elbo": jnp.mean(elbo)}


@functools.lru_cache(maxsize=None)
def _functions(est_name: str, s: DiscreteSettings, mesh) -> _Functions:
    return _Functions(est_name, s, mesh)


def _fns(spec: RunSpec, s: DiscreteSettings) -> _Functions:
    return _functions(spec.config["estimator"], s, parallel.current())


# ------------------------------------------------------------------ Experiment hooks
def runs(s: DiscreteSettings, estimators: list, seeds: list) -> list:
    return [RunSpec(f"{est}-seed{seed}",
                    {"estimator": est, "seed": seed, "model": s.kind,
                     "layers": getattr(s, "layers", 1), "dataset": s.dataset})
            for est in estimators for seed in seeds]


def init(spec: RunSpec, s: DiscreteSettings):
    fns = _fns(spec, s)
    params = dm.init_params(fns.spec, jax.random.PRNGKey(spec.config["seed"]),
                            _data(s)["mean"])
    cv = fns.init_cv(params, _variance_batch(s))
    return {"params": params, "opt_state": fns.opt.init(params), "cv": cv,
            "cv_opt_state": None if cv is None else fns.cv_opt.init(cv), "epoch": 0}


def advance(spec: RunSpec, s: DiscreteSettings, state, n: int):
    """n epochs; one row per epoch: the mean and last single-sample training ELBO,
    the wall time (and, for the first epoch of a session, the compile time)."""
    fns = _fns(spec, s)
    train = _train_array(s)
    rows = []
    for _ in range(n):
        epoch = int(state["epoch"])
        state, elbos, seconds, compile_s = fns.run_epoch(state, train, spec.config["seed"])
        row = {"step": epoch, "epoch": epoch + 1, "train_elbo": float(np.mean(elbos)),
               "train_elbo_last_batch": float(elbos[-1]), "epoch_seconds": seconds,
               "steps_per_epoch": fns.spe}
        if compile_s is not None:
            row["compile_seconds"] = compile_s
        rows.append(row)
    return state, rows


def _tested_at(s: DiscreteSettings, epoch: int) -> bool:
    return epoch == s.total_epochs or (epoch > 0 and epoch % s.test_every == 0)


def evaluate(spec: RunSpec, s: DiscreteSettings, state) -> dict:
    """Gradient log-variances (after the first epoch: Adam's moments exist only after a
    step) and, every test_every epochs and at the end, the test metrics."""
    fns = _fns(spec, s)
    seed, epoch = spec.config["seed"], int(state["epoch"])
    params, opt_state, cv = parallel.replicate(common.strong(
        (state["params"], state["opt_state"], state["cv"])), fns.mesh)
    out = {"epoch": epoch}
    if epoch > 0:
        out.update(common.floats(fns.evaluate_fn(
            params, opt_state, cv, parallel.replicate(_variance_batch(s), fns.mesh),
            parallel.replicate(common.step_key(seed, epoch, common.VARIANCE_STREAM),
                               fns.mesh))))
    if _tested_at(s, epoch):
        t0 = time.perf_counter()
        out.update(common.floats(fns.test_fn(
            params, parallel.replicate(_test_array(s), fns.mesh),
            parallel.replicate(common.step_key(seed, epoch, common.EVALUATION_STREAM),
                               fns.mesh))))
        out["test_seconds"] = time.perf_counter() - t0
    return out


def figures(out: Path) -> list:
    from stochbp.experiments import discrete_report
    return discrete_report.figures(out)


def report(out: Path, rel_to: Path = None) -> str:
    from stochbp.experiments import discrete_report
    return discrete_report.report(out, rel_to)


def _experiment(name: str, settings_type, description: str) -> Experiment:
    categorical = issubclass(settings_type, CategoricalSettings)
    estimator_names = CATEGORICAL_ESTIMATORS if categorical else BERNOULLI_ESTIMATORS
    options = ("dataset", "data_dir") + (("layers",) if "layers" in settings_type.names()
                                         else ())
    return Experiment(
        name=name, description=description, estimator_names=estimator_names,
        settings=_presets(settings_type), runs=runs, init=init, advance=advance,
        evaluate=evaluate, total_steps=epochs_of, figures=figures, report=report,
        options=options, check=functools.partial(check_data,
                                                 estimator_names=estimator_names),
        quick_estimators=QUICK_CATEGORICAL if categorical else QUICK_BERNOULLI)


SBN = _experiment("sbn", SbnSettings, "Appendix B, Table 1: linear sigmoid belief "
                  "networks (1 or 2 stochastic layers of 200 Bernoulli units)")
BERNOULLI_VAE = _experiment("bernoulli-vae", BernoulliVaeSettings, "Appendix B, Table 1: "
                            "nonlinear Bernoulli VAE (200 Bernoulli units)")
CATEGORICAL_LINEAR = _experiment("categorical-linear", CategoricalSettings, "Appendix B, "
                                 "Tables 2-3: one linear layer, 20 categorical variables "
                                 "of 10 classes")
CATEGORICAL_VAE = _experiment("categorical-vae", CategoricalVaeSettings, "Appendix B, "
                              "Tables 2-3: categorical VAE, 20 variables of 10 classes")
EXPERIMENTS = (SBN, BERNOULLI_VAE, CATEGORICAL_LINEAR, CATEGORICAL_VAE)

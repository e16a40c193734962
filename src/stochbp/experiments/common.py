"""Small pieces shared by the experiments: positivity transform, random key streams,
gradient moments, host/device conversions."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def softplus_inverse(x):
    x = jnp.asarray(x)
    return x + jnp.log(-jnp.expm1(-x))


# Independent random streams of one run. step_key(seed, step, stream) folds the stream
# number in before the step, so every purpose draws its own keys, and a key depends only
# on (seed, step, stream): a resumed run draws the same numbers as an uninterrupted one.
TRAIN_STREAM = 0  # the gradient estimate of each training step
VARIANCE_STREAM = 1  # the repeated gradient draws of an evaluation
BATCH_ORDER_STREAM = 2  # the permutation of the training data in each epoch
EVALUATION_STREAM = 3  # Monte Carlo estimates of evaluation metrics (ELBO, IS bound)
BINARIZE_STREAM = 5  # the dynamic binarization of training images (Omniglot)
MONITOR_STREAM = 6  # the single-sample training ELBO logged at each step


def step_key(seed: int, step, stream: int = TRAIN_STREAM):
    """Key for (seed, step, stream): identical whether or not the run was resumed."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), stream), step)


def gradient_moments(grad_fn, params, keys):
    """Per-draw gradients over `keys` (vmapped) -> (mean, log of the mean variance, draws).

    The log-variance is log(mean over parameters of the per-parameter variance across
    draws), the quantity the paper's variance figures plot.
    """
    draws = jax.vmap(lambda k: grad_fn(params, k))(keys)
    flat = jnp.concatenate([g.reshape(g.shape[0], -1)
                            for g in jax.tree_util.tree_leaves(draws)], axis=1)
    var = jnp.var(flat, axis=0, ddof=1)
    return jnp.mean(flat, axis=0), jnp.log(jnp.mean(var)), flat


def floats(d: dict) -> dict:
    from stochbp.experiments.parallel import to_host
    return {k: float(to_host(v)) for k, v in d.items()}


def strong(tree):
    """Device arrays without weak types, so jitted chunks compile once per run shape."""
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


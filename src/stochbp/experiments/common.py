"""Small pieces shared by the experiments: positivity transform, keys, Adam steps."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def softplus_inverse(x):
    x = jnp.asarray(x)
    return x + jnp.log(-jnp.expm1(-x))


def step_key(seed: int, step, stream: int = 0):
    """Key for (seed, step): identical whether or not the run was resumed."""
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
    return {k: float(np.asarray(v)) for k, v in d.items()}


def strong(tree):
    """Device arrays without weak types, so jitted chunks compile once per run shape."""
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


def advance_chunk(compiled_advance, state: dict, seed: int, n: int, metric: str):
    """Run n optimisation steps with a jitted scan; one metric row per step."""
    start = int(state["step"])
    params, opt_state, values = compiled_advance(
        *strong((state["params"], state["opt_state"])), jnp.int32(seed), jnp.int32(start),
        jnp.zeros(n))
    rows = [{"step": start + i, metric: float(v)} for i, v in enumerate(values)]
    return {"params": params, "opt_state": opt_state, "step": start + n}, rows

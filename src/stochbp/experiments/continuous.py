"""What the two continuous experiments (gamma toy, Laplace BLR) share: a run is a dict
of parameters trained by an optax optimiser, advanced by a jitted ``lax.scan`` over
steps, and evaluated by a jitted function of (params, seed, step).

An experiment supplies, per (run, settings), a :class:`Compiled` triple and the initial
parameters; :class:`AdamHooks` turns them into the runner's ``init`` / ``advance`` /
``evaluate`` hooks. The run's state is ``{"params", "opt_state", "step"}``; its arrays
are replicated over the current mesh (:mod:`parallel`), and an experiment with a
minibatch splits it with ``parallel.shard_batch``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from stochbp.experiments import common, parallel


@dataclasses.dataclass(frozen=True)
class Compiled:
    """Jitted pieces of one run configuration.

    optimizer: an optax GradientTransformation;
    advance(params, opt_state, seed, start, zeros(n)) -> (params, opt_state, metric
        of each of the n steps start, ..., start + n - 1);
    evaluate(params, seed, step) -> dict of scalar metrics."""

    optimizer: Any
    advance: Callable
    evaluate: Callable


def training_step(optimizer, metric_and_grad: Callable) -> Callable:
    """The scan body of one optimisation step.

    ``metric_and_grad(params, seed, step) -> (metric, gradient)``; the step applies
    ``optimizer`` to the gradient and logs the metric (taken before the update)."""
    def one_step(carry, step):
        params, opt_state, seed = carry
        metric, grad = metric_and_grad(params, seed, step)
        updates, opt_state = optimizer.update(grad, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, seed), metric
    return one_step


def scanned(one_step: Callable) -> Callable:
    """jit(advance): ``one_step`` scanned over the steps start, ..., start + n - 1 (n is
    the length of the last argument, so n is static and the seed and start are not)."""
    @jax.jit
    def advance(params, opt_state, seed, start, n_steps_array):
        steps = start + jnp.arange(n_steps_array.shape[0])
        (params, opt_state, _), values = jax.lax.scan(one_step, (params, opt_state, seed),
                                                      steps)
        return params, opt_state, values
    return advance


@dataclasses.dataclass(frozen=True)
class AdamHooks:
    """The runner's init / advance / evaluate hooks of a continuous experiment.

    compiled(spec, settings) -> Compiled (cached by the experiment);
    initial_params(spec, settings) -> the parameter dict at step 0;
    step_metric: the name of the per-step metric ``advance`` logs;
    extra_metrics(spec, settings, state) -> dict added after the jitted evaluation's."""

    compiled: Callable
    initial_params: Callable
    step_metric: str
    extra_metrics: Optional[Callable] = None

    def init(self, spec, s):
        params = self.initial_params(spec, s)
        return {"params": params, "opt_state": self.compiled(spec, s).optimizer.init(params),
                "step": 0}

    def advance(self, spec, s, state, n: int):
        """n optimisation steps with the jitted scan; one metric row per step."""
        start = int(state["step"])
        params, opt_state, values = self.compiled(spec, s).advance(
            *parallel.replicate(common.strong((state["params"], state["opt_state"]))),
            *parallel.replicate((jnp.int32(spec.config["seed"]), jnp.int32(start))),
            jnp.zeros(n))
        rows = [{"step": start + i, self.step_metric: float(v)}
                for i, v in enumerate(parallel.to_host(values))]
        return {"params": params, "opt_state": opt_state, "step": start + n}, rows

    def evaluate(self, spec, s, state) -> dict:
        out = common.floats(self.compiled(spec, s).evaluate(
            *parallel.replicate((common.strong(state["params"]),
                                 jnp.int32(spec.config["seed"]), jnp.int32(state["step"])))))
        if self.extra_metrics is not None:
            out.update(self.extra_metrics(spec, s, state))
        return out

"""Per-draw gradient variance of the categorical estimators on one small problem.

d = 4 independent categorical variables with K = 5 classes (logits drawn once), f a
non-linear function of the one-hot rows; the exact gradient by enumeration (625
states). Every estimator gets S = 2 samples per call (the leave-one-out baseline needs
two); the table gives the variance of one call's gradient w.r.t. the logits (trace),
the number of evaluations of f per call, their product, the bias in standard errors
and the time per call (jitted, vmapped over draws). RELAX's network (relaxed sample
only, or relaxed sample + noise + logits) is trained for 300 steps of
stochbp.variance_gradient with Adam first.

    PYTHONPATH=src python benchmarks/categorical_estimators.py
"""
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import optax

import stochbp

jax.config.update("jax_enable_x64", True)

D, K, S, DRAWS = 4, 5, 2, 20000
LOGITS = 1.5 * jax.random.normal(jax.random.PRNGKey(0), (D, K))
V = jax.random.normal(jax.random.PRNGKey(1), (D, K))
W = jax.random.normal(jax.random.PRNGKey(2), (D, K))


def h(y):  # one-hot (or relaxed) rows (D, K)
    a, b = jnp.sum(y * V), jnp.sum(y * W)
    return jnp.sin(2.0 * a) + 0.5 * b ** 2


F = stochbp.one_hot(h, K)
make = lambda l: nd.Categorical(logits=l)  # noqa: E731


def exact_gradient():
    states = jnp.array(list(itertools.product(range(K), repeat=D)))

    def expectation(l):
        p = jax.nn.softmax(l, -1)
        w = jnp.prod(p[jnp.arange(D), states], axis=1)
        return jnp.sum(w * jax.vmap(F)(states))
    return jax.grad(expectation)(LOGITS)


def trained_relax(inputs):
    est = stochbp.relax(hidden=(32,), control_inputs=inputs)
    state = est.init(F, make(LOGITS), jax.random.PRNGKey(3))
    opt = optax.adam(3e-3)

    def step(carry, k):
        st, os = carry
        _, g = stochbp.variance_gradient(F, make, LOGITS, k, st, estimator=est,
                                         num_samples=S)
        up, os = opt.update(g, os, st)
        return (optax.apply_updates(st, up), os), None
    (state, _), _ = jax.jit(lambda s, ks: jax.lax.scan(step, (s, opt.init(s)), ks))(
        state, jax.random.split(jax.random.PRNGKey(4), 300))
    return est, state


def draws(est, state, num_draws):
    def one(k):
        return jax.grad(lambda l: stochbp.expectation_with_state(
            F, make(l), k, state, estimator=est, num_samples=S)[0])(LOGITS)
    fn = jax.jit(jax.vmap(one))
    keys = jax.random.split(jax.random.PRNGKey(5), num_draws)
    fn(keys).block_until_ready()
    t = time.perf_counter()
    g = fn(keys).block_until_ready()
    return g, (time.perf_counter() - t) / num_draws


def main():
    exact = exact_gradient()
    sf = stochbp.score_function
    rows = [
        ("score_function()", sf(), None, S),
        ("score_function('leave_one_out')", sf("leave_one_out"), None, S),
        ("arsm()", stochbp.arsm(), None, S * (K * (K - 1) // 2 + 1)),
        ("unordered_set(k=2)", stochbp.unordered_set(2), None, S * (D + 1)),
        ("unordered_set(k=3)", stochbp.unordered_set(3), None, S * (2 * D + 1)),
        ("rao_blackwell_topk(k=1)", stochbp.rao_blackwell_topk(1), None, S * (2 * D + 1)),
        ("rao_blackwell_topk(k=1, leave_one_out)",
         stochbp.rao_blackwell_topk(1, sf("leave_one_out")), None, S * (2 * D + 1)),
        ("rao_blackwell_topk(k=2, leave_one_out)",
         stochbp.rao_blackwell_topk(2, sf("leave_one_out")), None, S * (3 * D + 1)),
        ("fourier()", stochbp.fourier(), None, S * (D * K + 1)),
        ("gumbel_softmax(0.5) (biased)", stochbp.gumbel_softmax(0.5), None, S),
        ("rebar()", stochbp.rebar(), None, 3 * S),
    ]
    for inputs in ["relaxed", "noise_and_params"]:
        est, state = trained_relax(inputs)
        rows.append((f"relax(control_inputs='{inputs}'), trained", est, state, 3 * S))
    print(f"d = {D}, K = {K}, S = {S} per call, {DRAWS} calls; variance = trace of the "
          "covariance of one call's gradient w.r.t. the logits\n")
    print("| estimator | variance | f evaluations / call | variance x evaluations | "
          "max bias / SE | time / call (us) |")
    print("|---|---|---|---|---|---|")
    for name, est, state, evals in rows:
        state = state if state is not None else est.init(F, make(LOGITS), jax.random.PRNGKey(0))
        g, dt = draws(est, state, DRAWS)
        var = float(np.sum(np.var(np.asarray(g), axis=0, ddof=1)))
        se = np.std(np.asarray(g), axis=0, ddof=1) / np.sqrt(DRAWS)
        bias = float(np.max(np.abs(np.asarray(g.mean(0)) - np.asarray(exact)) / se))
        print(f"| `{name}` | {var:.4g} | {evals} | {var * evals:.4g} | {bias:.1f} | "
              f"{dt * 1e6:.1f} |")


if __name__ == "__main__":
    main()

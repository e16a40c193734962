"""TFP's reparameterised Gaussian mixture on the stochbp mixture benchmark problem.

Runs in its own virtual environment (TFP's JAX substrate needs an older JAX than
stochbp; see README.md beside this file). Prints one JSON object on stdout:

    {"library": "tfp", "versions": {...}, "cases": {"diagonal": {...}, "full": {...}}}

each case with the median seconds of a jitted gradient of mean_s sum_d x_sd^2 with
respect to (logits, loc, scale or scale_tril), of plain sampling, and per-sample times.
    /tmp/tfpenv/bin/python benchmarks/external/tfp_mixture.py [--repeats 30]

Variance mode (benchmarks/mixture.py, section 6): ``--variance diagonal:2x1,...
[--function sumsq|lse]`` (f = sum x^2, or logsumexp(x) + (sum x)^2 / D) prints
{"variance": {"diagonal/2x1": {"logits": v, "loc": v, "scale": v, "us_per_sample": t}}},
v the trace of the covariance of one block's gradient over ``--draws`` independent
gradients of S = samples-per-component x K samples each, times S (the variance of a
one-sample gradient), and t the median time per sample of a jitted gradient of
--time-samples (rounded up to a multiple of K) samples.
"""
import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_probability as tfp_root
from tensorflow_probability.substrates import jax as tfp

tfd = tfp.distributions


def problem(k, d, seed):
    """Same parameters as benchmarks/mixture.py (NumPy generator, float32)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=k)
    loc = rng.normal(size=(k, d))
    scale = rng.uniform(0.5, 1.5, size=(k, d))
    tril = np.tril(rng.normal(size=(k, d, d)) * 0.3, -1) + \
        np.eye(d) * rng.uniform(0.5, 1.2, size=(k, 1, d))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return f32(logits), f32(loc), f32(scale), f32(tril)


def make(kind, params):
    logits, loc, scale = params
    comp = (tfd.Independent(tfd.Normal(loc, scale), 1) if kind == "diagonal"
            else tfd.MultivariateNormalTriL(loc, scale))
    return tfd.MixtureSameFamily(tfd.Categorical(logits=logits), comp, reparameterize=True)


def test_function(name, x):
    """f of every sample (last axis D): sum x^2, or logsumexp(x) + (sum x)^2 / D."""
    if name == "lse":
        return jax.nn.logsumexp(x, -1) + jnp.sum(x, -1) ** 2 / x.shape[-1]
    return jnp.sum(x ** 2, -1)


def median_time(fn, args, repeats):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def variance_mode(args):
    out = {}
    for case in args.variance.split(","):
        kind, size = case.split(":")
        k, d = (int(v) for v in size.split("x"))
        label = f"{kind}/{k}x{d}"
        logits, loc, scale, tril = problem(k, d, args.seed)
        params = (logits, loc, scale if kind == "diagonal" else tril)
        n = args.samples_per_component * k

        def loss(params, key, num, kind=kind):
            x = make(kind, params).sample(num, seed=key)
            return jnp.mean(test_function(args.function, x))
        try:
            keys = jax.random.split(jax.random.PRNGKey(args.seed + 1), args.draws)
            one = jax.grad(lambda p, key: loss(p, key, n))
            batch = jax.jit(jax.vmap(one, in_axes=(None, 0)))
            chunk = 100  # all draws at once ran out of memory at K = 20, D = 50
            parts = [batch(params, keys[i:i + chunk]) for i in range(0, args.draws, chunk)]
            g = [jnp.concatenate([part[b] for part in parts]) for b in range(3)]
            names = ("logits", "loc", "scale" if kind == "diagonal" else "scale_tril")
            row = {name: float(np.sum(np.var(np.asarray(a, np.float64).reshape(
                args.draws, -1), axis=0, ddof=1))) * n for name, a in zip(names, g)}
            row["finite"] = bool(all(np.all(np.isfinite(np.asarray(a))) for a in g))
            n_time = k * -(-args.time_samples // k)
            timed = jax.jit(jax.grad(lambda p, key: loss(p, key, n_time)))
            row["us_per_sample"] = 1e6 * median_time(
                timed, (params, keys[0]), args.repeats) / n_time
            out[label] = row
        except Exception as err:  # noqa: BLE001 - report what TFP does not support
            out[label] = {"error": f"{type(err).__name__}: {err}"[:300]}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--dims", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variance", help="variance mode: sizes, e.g. diagonal:2x1,full:10x10")
    p.add_argument("--draws", type=int, default=1000, help="variance mode: gradients")
    p.add_argument("--samples-per-component", type=int, default=4)
    p.add_argument("--function", choices=("sumsq", "lse"), default="sumsq",
                   help="variance mode: f = sum x^2, or logsumexp(x) + (sum x)^2 / D")
    p.add_argument("--time-samples", type=int, default=2048)
    args = p.parse_args(argv)
    if args.variance:
        json.dump({"library": "tfp", "versions": {"tfp": tfp_root.__version__,
                                                  "jax": jax.__version__},
                   "function": args.function, "variance": variance_mode(args)}, sys.stdout)
        print()
        return 0
    logits, loc, scale, tril = problem(args.components, args.dims, args.seed)
    n = args.samples
    out = {"library": "tfp", "versions": {"tfp": tfp_root.__version__,
                                          "jax": jax.__version__},
           "samples": n, "cases": {}}
    for kind, params in (("diagonal", (logits, loc, scale)), ("full", (logits, loc, tril))):
        key = jax.random.PRNGKey(args.seed)

        def loss(params, key, kind=kind):
            x = make(kind, params).sample(n, seed=key)
            return jnp.mean(jnp.sum(x ** 2, -1))
        grad = jax.jit(jax.grad(loss))
        sample = jax.jit(lambda params, key, kind=kind: make(kind, params).sample(n, seed=key))
        try:
            g = grad(params, key)
            finite = bool(all(np.all(np.isfinite(np.asarray(a))) for a in g))
            t_grad = median_time(grad, (params, key), args.repeats)
            t_sample = median_time(sample, (params, key), args.repeats)
            out["cases"][kind] = {"grad_s": t_grad, "sample_s": t_sample,
                                  "grad_us_per_sample": 1e6 * t_grad / n,
                                  "finite": finite}
        except Exception as err:  # noqa: BLE001 - report what TFP does not support
            out["cases"][kind] = {"error": f"{type(err).__name__}: {err}"[:300]}
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

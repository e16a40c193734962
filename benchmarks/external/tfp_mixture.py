"""TFP's reparameterised Gaussian mixture on the stochbp mixture benchmark problem.

Runs in its own virtual environment (TFP's JAX substrate needs an older JAX than
stochbp; see README.md beside this file). Prints one JSON object on stdout:

    {"library": "tfp", "versions": {...}, "cases": {"diagonal": {...}, "full": {...}}}

each case with the median seconds of a jitted gradient of mean_s sum_d x_sd^2 with
respect to (logits, loc, scale or scale_tril), of plain sampling, and per-sample times.
    /tmp/tfpenv/bin/python benchmarks/external/tfp_mixture.py [--repeats 30]
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


def median_time(fn, args, repeats):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--dims", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
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

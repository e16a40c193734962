"""Memory and time of the Normal and MultivariateNormal Fourier rules at large d.

Before: the previous implementation (reproduced below as ``before_*``), which took the
pure derivatives of f along all d unit vectors at once (a d x d identity and d copies
of every intermediate of f) and, for the MultivariateNormal, the full (n k)^2 Hessian
per sample before keeping its n diagonal k x k blocks.
After: the library as it is (``stochbp.expectation`` with ``stochbp.fourier()``), which
goes through the coordinates in chunks and keeps only the blocks.

Both compute the same gradient (tests/test_taylor.py checks equality on small cases;
this script also compares them wherever "before" is run).

Columns:
  work MB     XLA's temporary buffers for the compiled gradient (``memory_analysis()``
              of the lowered program; no run needed, so it is given even where the
              program cannot run).
  compile s   lowering + compilation of the gradient.
  run s       median of 3 runs of the compiled gradient (after one warm-up).
  pathwise s  the pathwise gradient at the same size, for scale.
A "before" case whose work space exceeds --max-gb is compiled but not run ("skip").

Functions (float32, S samples):
  Normal:  f(z) = sum_i log_sigmoid(z_i) + 0.1 * (sum_i z_i)^2 / d      (z of shape (d,))
  MVN:     f(Z) = sum_b sum log_sigmoid(Z_b W) with W a fixed k x k matrix
           (Z of shape (n, k), batch n, event k; coupled within each block)

    PYTHONPATH=src python benchmarks/large_d.py [--samples 1] [--max-gb 2]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd

import stochbp
from stochbp._src import series, taylor


# ----------------------------------------------------------- the previous implementation
def before_directional_derivatives(f, z, order):
    lowered = taylor.jet_compatible(f, z)
    coeffs = jax.vmap(lambda e: taylor.taylor_coefficients(lowered, z, e, order),
                      out_axes=1)(jnp.eye(z.shape[0], dtype=z.dtype))
    fact = jnp.asarray([math.factorial(n) for n in range(1, order + 1)], z.dtype)
    return coeffs * fact[:, None]


def before_normal(f, loc, scale, key, num_samples):
    d = nd.Normal(loc, scale)
    z = jax.lax.stop_gradient(d.sample(key, (num_samples,)))
    value = jnp.mean(jax.vmap(f)(z))
    derivs = jnp.mean(jax.vmap(lambda x: before_directional_derivatives(f, x, 2))(z), 0)
    coeffs = jnp.stack([loc, 0.5 * scale ** 2])
    return value + series.zero_valued(coeffs, derivs)


def before_mvn(f, loc, tril, key, num_samples):
    d = nd.MultivariateNormal(loc, scale_tril=tril)
    z = jax.lax.stop_gradient(d.sample(key, (num_samples,)))
    value = jnp.mean(jax.vmap(f)(z))
    grads = jnp.mean(jax.vmap(jax.grad(f))(z), axis=0)
    n, k = loc.shape
    flat_f = lambda x: f(x.reshape(n, k))  # noqa: E731
    hess = jnp.mean(jax.vmap(jax.hessian(flat_f))(z.reshape(num_samples, -1)), axis=0)
    blocks = hess.reshape(n, k, n, k)[jnp.arange(n), :, jnp.arange(n), :]
    return value + series.zero_valued(loc, grads) + 0.5 * series.zero_valued(
        d.covariance_matrix, blocks)


# ----------------------------------------------------------- the library now
def after_normal(f, loc, scale, key, num_samples):
    return stochbp.expectation(f, nd.Normal(loc, scale), key, estimator=stochbp.fourier(),
                               num_samples=num_samples)


def after_mvn(f, loc, tril, key, num_samples):
    return stochbp.expectation(f, nd.MultivariateNormal(loc, scale_tril=tril), key,
                               estimator=stochbp.fourier(), num_samples=num_samples)


def pathwise_normal(f, loc, scale, key, num_samples):
    return stochbp.expectation(f, nd.Normal(loc, scale), key, estimator=stochbp.pathwise(),
                               num_samples=num_samples)


def pathwise_mvn(f, loc, tril, key, num_samples):
    return stochbp.expectation(f, nd.MultivariateNormal(loc, scale_tril=tril), key,
                               estimator=stochbp.pathwise(), num_samples=num_samples)


# ----------------------------------------------------------- measurement
def compiled_gradient(surrogate, f, args, key, num_samples):
    grad = jax.jit(jax.grad(lambda *a: surrogate(f, *a, key, num_samples), argnums=(0, 1)))
    t0 = time.perf_counter()
    compiled = grad.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    work = getattr(mem, "temp_size_in_bytes", float("nan")) if mem is not None else float("nan")
    return compiled, compile_s, work


def timed(compiled, args, repeats=3):
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def measure(label, size, before, after, pathwise, f, args, key, num_samples, max_bytes,
            run_after=True):
    row = {"case": label, "size": size}
    cb, row["b_compile"], row["b_work"] = compiled_gradient(before, f, args, key, num_samples)
    grads_before = None
    if row["b_work"] <= max_bytes:
        row["b_run"], grads_before = timed(cb, args)
    else:
        row["b_run"] = None
    ca, row["a_compile"], row["a_work"] = compiled_gradient(after, f, args, key, num_samples)
    if run_after and row["a_work"] <= max_bytes:
        row["a_run"], grads_after = timed(ca, args)
        if grads_before is not None:
            row["max_rel_diff"] = max(
                float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
                for a, b in zip(grads_after, grads_before))
    else:
        row["a_run"] = None
    cp, _, _ = compiled_gradient(pathwise, f, args, key, num_samples)
    row["p_run"], _ = timed(cp, args)
    return row


def fmt_mb(b):
    return f"{b / 2 ** 20:,.1f}"


def fmt_s(s):
    return "skip" if s is None else f"{s:.3f}"


def print_table(rows):
    head = (f"{'case':<26}{'before work MB':>18}{'before run s':>14}{'after work MB':>16}"
            f"{'after compile s':>17}{'after run s':>13}{'pathwise s':>12}{'rel diff':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        diff = f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else "-"
        print(f"{r['case'] + ' ' + r['size']:<26}{fmt_mb(r['b_work']):>18}"
              f"{fmt_s(r['b_run']):>14}{fmt_mb(r['a_work']):>16}{r['a_compile']:>17.2f}"
              f"{fmt_s(r['a_run']):>13}{r['p_run']:>12.3f}{diff:>10}")


def normal_f(z):
    return jnp.sum(jax.nn.log_sigmoid(z)) + 0.1 * jnp.sum(z) ** 2 / z.shape[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--max-gb", type=float, default=2.0,
                        help="run a program only if XLA's work space is below this")
    parser.add_argument("--normal-d", type=int, nargs="*",
                        default=[1_000, 4_000, 16_000, 64_000, 10_000_000])
    parser.add_argument("--mvn-n", type=int, nargs="*", default=[100, 400, 1_600, 6_400])
    parser.add_argument("--mvn-k", type=int, default=10)
    parser.add_argument("--run-limit", type=int, default=64_000,
                        help="largest d (or n k) at which 'after' is run: its time grows "
                             "as d^2 (d Taylor passes of an f of cost d)")
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, jax {jax.__version__}, "
          f"float32, S = {args.samples} sample(s)")
    key = jax.random.PRNGKey(0)
    max_bytes = args.max_gb * 2 ** 30
    rows = []
    for d in args.normal_d:
        loc = jnp.linspace(-1.0, 1.0, d, dtype=jnp.float32)
        scale = jnp.full((d,), 0.5, jnp.float32)
        rows.append(measure("Normal", f"d={d:,}", before_normal, after_normal,
                            pathwise_normal, normal_f, (loc, scale), key, args.samples,
                            max_bytes, run_after=d <= args.run_limit))
        print(rows[-1], file=sys.stderr, flush=True)
    k = args.mvn_k
    W = jax.random.normal(jax.random.PRNGKey(1), (k, k), jnp.float32) / np.sqrt(k)
    mvn_f = lambda z: jnp.sum(jax.nn.log_sigmoid(z @ W))  # noqa: E731
    for n in args.mvn_n:
        loc = jnp.zeros((n, k), jnp.float32) + 0.1
        tril = jnp.broadcast_to(jnp.eye(k, dtype=jnp.float32) * 0.7
                                + jnp.tril(jnp.full((k, k), 0.05, jnp.float32), -1), (n, k, k))
        rows.append(measure("MVN", f"n={n:,},k={k}", before_mvn, after_mvn, pathwise_mvn,
                            mvn_f, (loc, tril), key, args.samples, max_bytes,
                            run_after=n * k <= args.run_limit))
        print(rows[-1], file=sys.stderr, flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()

"""Float32 softplus formulations on XLA's CPU backend: time and accuracy.

The Fourier steps of the discrete models (``stochbp.experiments.discrete_models``) spend
most of their elementwise time on sum_o x_o u_o - softplus(u_o) over substituted
logits u = base + c_s w_s + b (a rank-one update per substitution). This script times
that fused pattern on 200 x 96 x 784 float32 logits (the two-layer SBN's pixel term)
for several ways of writing softplus, interleaved, medians of ``--repeats`` rounds, and
measures each one's largest error in float32 ulps against float64 on a dense grid
(value, and for the candidates used in the models, the derivative sigma(x)).

Candidates:
* ``jax.nn.softplus`` (logaddexp behind a custom JVP);
* the earlier model form 0.5 (x + |x|) + log1p(e^-|x|);
* the model form since: log1p(e^min(x, T)) + max(x - T, 0), T = 40, on the signed
  logits (1 - 2x) u of binary data (``binary_loglik``);
* max(x, 0) + e^-|x| P(e^-|x|), P a minimax polynomial for log1p(u) / u on [0, 1]
  (degree 7 or 8, fitted here in float64, Horner in float32): no log1p;
* exp alone and log1p alone, for scale.

On XLA's CPU backend an elementwise chain runs inside a YNNPACK fusion, where each
operation costs a pass over a tile: a cheap operation about a fifth of an exp, so a
polynomial of degree 7 (14 operations) costs more than the log1p it replaces, and what
helps is fewer operations, not cheaper transcendentals. A compare or select (as in
``jax.nn.softplus``) takes the fusion out of YNNPACK, about 3x slower.

    PYTHONPATH=src python benchmarks/softplus.py [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

T = 40.0


def minimax_log1p_over_u(degree: int) -> np.ndarray:
    """Coefficients (low to high) of P with P(u) ~ log1p(u) / u on [0, 1], minimising the
    largest relative error (Lawson's iteratively reweighted least squares, float64)."""
    u = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, 4000))
    y = np.where(u == 0, 1.0, np.log1p(u) / np.where(u == 0, 1.0, u))
    basis = np.vander(u, degree + 1, increasing=True)
    weight = np.ones_like(u)
    for _ in range(30):
        sw = np.sqrt(weight) / y
        coef = np.linalg.lstsq(basis * sw[:, None], y * sw, rcond=None)[0]
        err = np.abs(basis @ coef - y) / y
        weight = weight * err / np.sum(weight * err)
    return coef


def horner(coef, t):
    acc = jnp.asarray(coef[-1], t.dtype)
    for c in coef[-2::-1]:
        acc = acc * t + jnp.asarray(c, t.dtype)
    return acc


def softplus_earlier(v):
    return 0.5 * (v + jnp.abs(v)) + jnp.log1p(jnp.exp(-jnp.abs(v)))


def softplus_models(v):
    return jnp.log1p(jnp.exp(jnp.minimum(v, T))) + jnp.maximum(v - T, 0)


def softplus_poly(degree):
    coef = minimax_log1p_over_u(degree)

    def f(v):
        u = jnp.exp(-jnp.abs(v))
        return 0.5 * (v + jnp.abs(v)) + u * horner(coef, u)
    return f


def max_ulps(f, derivative: bool) -> tuple:
    rng = np.random.default_rng(1)
    x = np.concatenate([np.linspace(-87, 87, 1_000_001), rng.uniform(-3, 3, 200_000),
                        rng.uniform(35, 45, 50_000)]).astype(np.float32)
    xd = x.astype(np.float64)
    ref = np.maximum(xd, 0) + np.log1p(np.exp(-np.abs(xd)))
    sig = 1 / (1 + np.exp(-xd))

    def ulps(got, want):
        return float(np.max(np.abs(got.astype(np.float64) - want)
                            / np.spacing(np.abs(want).astype(np.float32))))
    value = ulps(np.asarray(jax.jit(f)(jnp.asarray(x))), ref)
    if not derivative:
        return value, None
    return value, ulps(np.asarray(jax.jit(jax.vmap(jax.grad(f)))(jnp.asarray(x))), sig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    S, n, P = 200, 96, 784
    rng = np.random.default_rng(0)
    arrays = (rng.normal(0, 3, (n, P)), rng.choice([-1.0, 1.0], (S, n)),
              rng.normal(0, 0.3, (S, P)), rng.normal(0, 1, (P,)),
              (rng.random((n, P)) < 0.2))
    arrays = tuple(jnp.asarray(a, jnp.float32) for a in arrays)

    def logits(a):
        base, coef, row, b, _ = a
        return base[None] + coef[:, :, None] * row[:, None, :] + b

    def pixel_term(sp):
        return lambda a: jnp.sum(a[4] * logits(a) - sp(logits(a)), -1)

    cases = {  # name: (timed function, softplus for the accuracy check, derivative?)
        "jax.nn.softplus": (pixel_term(jax.nn.softplus), jax.nn.softplus, True),
        "0.5 (x + |x|) + log1p(e^-|x|) (earlier)": (pixel_term(softplus_earlier),
                                                    softplus_earlier, True),
        "log1p(e^min(x,T)) + max(x - T, 0)": (pixel_term(softplus_models),
                                              softplus_models, True),
        "the same on (1 - 2x) u (binary_loglik, models now)":
            (lambda a: -jnp.sum(softplus_models((1 - 2 * a[4]) * logits(a)), -1),
             softplus_models, False),
        "max(x,0) + u P7(u), u = e^-|x| (no log1p)": (pixel_term(softplus_poly(7)),
                                                      softplus_poly(7), False),
        "max(x,0) + u P8(u), u = e^-|x| (no log1p)": (pixel_term(softplus_poly(8)),
                                                      softplus_poly(8), False),
        "e^x alone": (lambda a: jnp.sum(jnp.exp(logits(a)), -1), None, False),
        "log1p(|x|) alone": (lambda a: jnp.sum(jnp.log1p(jnp.abs(logits(a))), -1), None,
                             False),
        "the update alone (sum of u)": (lambda a: jnp.sum(logits(a), -1), None, False),
    }
    fns = {k: jax.jit(v[0]) for k, v in cases.items()}
    for f in fns.values():
        jax.block_until_ready(f(arrays))
    times = {k: [] for k in fns}
    for r in range(args.repeats):
        names = list(fns)
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[k](arrays))
            times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["0.5 (x + |x|) + log1p(e^-|x|) (earlier)"])
    print(f"# {S} x {n} x {P} = {S * n * P / 1e6:.1f} M float32 logits; medians of "
          f"{args.repeats} interleaved rounds; load average {os.getloadavg()[0]:.1f}; "
          f"jax {jax.__version__}\n")
    print("| softplus | ms (median) | vs earlier | max error, value (ulp) | "
          "max error, derivative (ulp) |")
    print("|---|---|---|---|---|")
    for k, (_, sp, deriv) in cases.items():
        med = statistics.median(times[k])
        acc = max_ulps(sp, deriv) if sp is not None else (None, None)
        cell = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"| {k} | {1e3 * med:.2f} | {med / base:.2f} | {cell(acc[0])} | "
              f"{cell(acc[1])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

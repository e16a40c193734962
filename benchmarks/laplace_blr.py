"""Wall-clock cost of stochbp's gradient estimators on Bayesian logistic regression.

Problem: d = 30 weights, 64 data points (the first 64 rows of scikit-learn's breast
cancer data, features standardised over the whole data set, labels in {-1, 1}), a
factorised Laplace(mu, b) posterior and 50 posterior samples per gradient. The
expectation is that of the log-likelihood

    f(w) = sum_i log_sigmoid(y_i x_i . w).

For every estimator we jit jax.grad of stochbp.expectation with respect to (mu, b),
compile it once, then time ``--repeats`` calls with fresh keys. The estimators are
interleaved round-robin (with a rotating start) inside one loop, so slow phases of the
machine hit all of them alike. The Fourier rule is timed with a plain Python f (the
general per-coordinate Taylor path) and with the declared structure
stochbp.linear(log_sigmoid, y[:, None] * X, elementwise=True) (the fast path).

    PYTHONPATH=src python benchmarks/laplace_blr.py [--repeats 50] [--seed 0] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
from sklearn.datasets import load_breast_cancer

import stochbp

NUM_DATA = 64
NUM_SAMPLES = 50
ORDERS = (1, 2, 4, 8)
GOALS = {  # name of the Fourier variant -> allowed median(fourier) / median(pathwise)
    "fourier(order=8) general": 10.0,
    "fourier(order=8) linear": 3.0,
}


def load_problem(seed: int):
    data = load_breast_cancer()
    X = np.asarray(data.data, np.float64)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    y = np.where(data.target == 1, 1.0, -1.0)
    X, y = X[:NUM_DATA], y[:NUM_DATA]
    rng = np.random.default_rng(seed)
    d = X.shape[1]
    mu = 0.1 * rng.standard_normal(d)
    b = rng.uniform(0.1, 0.3, size=d)
    as_f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return as_f32(X), as_f32(y), as_f32(mu), as_f32(b)


def make_grad_fn(f, estimator):
    def objective(mu, b, key):
        return stochbp.expectation(f, nd.Laplace(mu, b), key, estimator=estimator,
                                   num_samples=NUM_SAMPLES)

    return jax.jit(jax.grad(objective, argnums=(0, 1)))


def build_cases(X, y):
    A = y[:, None] * X
    f_general = lambda w: jnp.sum(jax.nn.log_sigmoid(y * (X @ w)))  # noqa: E731
    f_linear = stochbp.linear(jax.nn.log_sigmoid, A, elementwise=True)
    cases = {"pathwise": make_grad_fn(f_general, stochbp.pathwise()),
             "score_function": make_grad_fn(f_general, stochbp.score_function())}
    for n in ORDERS:
        cases[f"fourier(order={n}) general"] = make_grad_fn(f_general, stochbp.fourier(order=n))
    for n in ORDERS:
        cases[f"fourier(order={n}) linear"] = make_grad_fn(f_linear, stochbp.fourier(order=n))
    return cases, A


def rel_err(a, b):
    a, b = np.concatenate([np.ravel(t) for t in a]), np.concatenate([np.ravel(t) for t in b])
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=50, help="timed calls per estimator")
    p.add_argument("--seed", type=int, default=0, help="seed for (mu, b) and the keys")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")

    t_start = time.perf_counter()
    X, y, mu, b = load_problem(args.seed)
    cases, A = build_cases(X, y)
    print(f"Bayesian logistic regression, Laplace posterior: d = {X.shape[1]}, "
          f"n = {X.shape[0]}, {NUM_SAMPLES} samples per gradient")
    print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} device), "
          f"numpyro {numpyro.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPU cores")
    print(f"b in [{float(b.min()):.3f}, {float(b.max()):.3f}], max_ij |y_i x_ij| = "
          f"{float(jnp.abs(A).max()):.2f}, max_j b_j max_i |x_ij| = "
          f"{float(jnp.max(b * jnp.abs(A).max(axis=0))):.2f}")

    # Compile (and warm up) every estimator.
    warm_key = jax.random.key(args.seed + 12345)
    compile_s, outputs = {}, {}
    for name, fn in cases.items():
        t0 = time.perf_counter()
        outputs[name] = jax.block_until_ready(fn(mu, b, warm_key))
        compile_s[name] = time.perf_counter() - t0
        jax.block_until_ready(fn(mu, b, warm_key))

    # Sanity check: the linear fast path must reproduce the general Fourier rule.
    print("\nSanity check, fourier general vs linear fast path (same key), "
          "relative error ||g_lin - g_gen|| / ||g_gen|| over (mu, b):")
    checks, ok_all = {}, True
    for n in ORDERS:
        err = rel_err(outputs[f"fourier(order={n}) linear"],
                      outputs[f"fourier(order={n}) general"])
        ok = err <= 1e-4
        ok_all &= ok
        checks[n] = {"rel_err": err, "ok": ok}
        print(f"  order {n}: {err:.2e}  {'OK' if ok else 'MISMATCH (> 1e-4)'}")
    all_finite = all(bool(np.all(np.isfinite(np.concatenate([np.ravel(t) for t in o]))))
                     for o in outputs.values())
    print(f"  all gradients finite: {all_finite}")

    # Timing: round-robin over estimators, rotating the starting estimator each round.
    names = list(cases)
    times = {name: [] for name in names}
    keys = jax.random.split(jax.random.key(args.seed), args.repeats)
    for r in range(args.repeats):
        key = keys[r]
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            fn = cases[name]
            t0 = time.perf_counter()
            jax.block_until_ready(fn(mu, b, key))
            times[name].append(time.perf_counter() - t0)

    stats = {}
    for name in names:
        t = np.asarray(times[name]) * 1e3
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        stats[name] = {"median_ms": float(med), "q1_ms": float(q1), "q3_ms": float(q3),
                       "iqr_ms": float(q3 - q1), "compile_s": compile_s[name]}
    base = stats["pathwise"]["median_ms"]
    for name in names:
        stats[name]["ratio_to_pathwise"] = stats[name]["median_ms"] / base

    print(f"\nTiming: {args.repeats} calls each, interleaved; per call = jitted "
          "grad w.r.t. (mu, b)")
    head = f"{'estimator':<28} {'median ms':>10} {'IQR ms':>9} {'x pathwise':>11} " \
           f"{'compile s':>10}"
    print(head)
    print("-" * len(head))
    for name in names:
        s = stats[name]
        print(f"{name:<28} {s['median_ms']:>10.3f} {s['iqr_ms']:>9.3f} "
              f"{s['ratio_to_pathwise']:>11.2f} {s['compile_s']:>10.2f}")

    print("\nGoals:")
    goals = {}
    for name, limit in GOALS.items():
        ratio = stats[name]["ratio_to_pathwise"]
        met = ratio <= limit
        goals[name] = {"limit": limit, "ratio": ratio, "met": met}
        print(f"  {name:<26} <= {limit:>4.1f}x pathwise: {ratio:6.2f}x  "
              f"{'MET' if met else 'NOT MET'}")
    total = time.perf_counter() - t_start
    print(f"\nTotal runtime {total:.1f} s")

    if args.json:
        result = {
            "problem": {"d": int(X.shape[1]), "n": int(X.shape[0]),
                        "num_samples": NUM_SAMPLES, "seed": args.seed,
                        "repeats": args.repeats},
            "versions": {"jax": jax.__version__, "numpyro": numpyro.__version__,
                         "python": platform.python_version(),
                         "backend": jax.default_backend(), "cpu_count": os.cpu_count()},
            "sanity_check": {"orders": {str(k): v for k, v in checks.items()},
                             "all_ok": bool(ok_all), "all_finite": all_finite},
            "timings": stats, "goals": goals, "total_runtime_s": total,
        }
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")
    return 0 if ok_all and all_finite else 1


if __name__ == "__main__":
    sys.exit(main())

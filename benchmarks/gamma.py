"""Gamma sampling and gamma-toy gradients: stochbp beside jax.random.gamma and PyTorch.

Problem (gamma toy problem 1 of the paper's Section 6.1, at its initial point):
z ~ Gamma(k, rate 1/mu) with d independent coordinates, k = mu = 1, float32, CPU,
f(z) = sum_j (z_j - 0.49)^2, gradient of the mean of f over ``batch`` samples with
respect to (k, mu). For d in {1, 100} and batch in {1, 1000} we time (medians of
interleaved calls, milliseconds):

* jax.random.gamma: numpyro's ``Gamma.sample`` (what stochbp drew with before);
* stochbp sample: the family's sampler (``gamma_sampling.standard_gamma``), what every
  stochbp estimator now draws with;
* numpyro rsample grad: pathwise gradient through numpyro's ``rsample``
  (jax.random.gamma's implicit derivative), the previous pathwise route;
* pathwise grad / fourier(2) grad: jax.jit(jax.grad) of stochbp.expectation with
  ``pathwise()`` and ``fourier(order=2)``;
* fourier(2) f-derivatives: the part of the fourier(2) gradient that draws nothing,
  the sample means of d^n f / dz_j^n (n = 1, 2) at batch x d fixed points
  (``series.mean_derivatives``; this f is proven separable, so one Taylor-mode pass per
  sample along the all-ones direction gives every coordinate);
* torch sample / torch rsample grad: PyTorch 2.13's ``Gamma.sample`` and the gradient
  through ``Gamma.rsample``, run by benchmarks/external/torch_gamma.py in its own
  environment (--torch-python), once with PyTorch's default threads and once with one
  thread; its runs alternate with ours in --rounds blocks so both see the same load.

Then the per-sample variance of each gradient (batch 1, --variance-draws draws, summed
over coordinates, for the shape k and the scale mu). Goals at batch 1000 x d = 100:
stochbp sample <= 1.5 x torch sample, pathwise and fourier(2) grad <= torch rsample grad.

    PYTHONPATH=src python benchmarks/gamma.py --torch-python /tmp/torchenv/bin/python \
        [--repeats 30] [--rounds 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd

import stochbp
from stochbp._src import gamma_sampling, series

EPS = 0.49
DIMS = (1, 100)
BATCHES = (1, 1000)
HERE = os.path.dirname(os.path.abspath(__file__))


def f(z):
    return jnp.sum((z - EPS) ** 2)


def make(k, mu):
    return nd.Gamma(k, 1.0 / mu)


def grad_fn(estimator, batch):
    def loss(k, mu, key):
        return stochbp.expectation(f, make(k, mu), key, estimator=estimator,
                                   num_samples=batch)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def numpyro_rsample_grad(batch):
    def loss(k, mu, key):
        return jnp.mean(jax.vmap(f)(make(k, mu).rsample(key, (batch,))))
    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def cases(d, batch):
    shape = (batch, d)
    z0 = gamma_sampling.standard_gamma(jax.random.key(5), jnp.ones(d, jnp.float32), shape,
                                       jnp.float32)
    return {
        "jax.random.gamma": jax.jit(lambda k, mu, key: jax.random.gamma(key, k, shape) * mu),
        "stochbp sample": jax.jit(lambda k, mu, key: gamma_sampling.standard_gamma(
            key, k, shape, jnp.float32) * mu),
        "numpyro rsample grad": numpyro_rsample_grad(batch),
        "pathwise grad": grad_fn(stochbp.pathwise(), batch),
        "fourier(2) grad": grad_fn(stochbp.fourier(order=2), batch),
        "fourier(2) f-derivatives": jax.jit(
            lambda k, mu, key: series.mean_derivatives(f, z0 * mu, 2)),
    }


def params(d):
    return jnp.ones(d, jnp.float32), jnp.ones(d, jnp.float32)


def time_block(fns, d, repeats, seed, times):
    k, mu = params(d)
    names = list(fns)
    keys = jax.random.split(jax.random.key(seed), repeats)
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            t0 = time.perf_counter()
            jax.block_until_ready(fns[name](k, mu, keys[r]))
            times[name].append(1e3 * (time.perf_counter() - t0))


def torch_block(python, repeats, seed, threads):
    if not python:
        return {"error": "not run (pass --torch-python)"}
    if not os.path.exists(python):
        return {"error": f"interpreter {python} not found; see benchmarks/external/README.md"}
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [python, os.path.join(HERE, "external", "torch_gamma.py"), "--repeats",
           str(repeats), "--seed", str(seed), "--variance-draws", "0", "--raw"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def variance_section(draws, seed):
    """Per-sample variance of each gradient at batch 1, summed over coordinates."""
    out = {}
    for d in DIMS:
        k, mu = params(d)
        keys = jax.random.split(jax.random.key(seed + 7), draws)
        row = {}
        for name, fn in (("pathwise", grad_fn(stochbp.pathwise(), 1)),
                         ("fourier(2)", grad_fn(stochbp.fourier(order=2), 1)),
                         ("numpyro rsample", numpyro_rsample_grad(1))):
            gk, gmu = jax.lax.map(lambda key: fn(k, mu, key), keys)
            row[name] = {"shape": float(jnp.var(gk, axis=0, ddof=1).sum()),
                         "scale": float(jnp.var(gmu, axis=0, ddof=1).sum())}
        out[f"d{d}"] = row
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variance-draws", type=int, default=2000)
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    per_round = max(1, args.repeats // args.rounds)
    load = [os.getloadavg()[0]]
    fns = {(d, b): cases(d, b) for d in DIMS for b in BATCHES}
    for (d, b), group in fns.items():  # compile and warm up
        k, mu = params(d)
        for fn in group.values():
            jax.block_until_ready(fn(k, mu, jax.random.key(99)))
    times = {db: {name: [] for name in group} for db, group in fns.items()}
    torch_raw = {"default": {}, "1 thread": {}}
    torch_meta = {}
    for r in range(args.rounds):
        for db, group in fns.items():
            time_block(group, db[0], per_round, args.seed + r, times[db])
        load.append(os.getloadavg()[0])
        for label, threads in (("default", None), ("1 thread", 1)):
            res = torch_block(args.torch_python, per_round, args.seed + r, threads)
            if "error" in res:
                torch_meta[label] = res
                continue
            torch_meta[label] = {"versions": res["versions"], "threads": res["threads"]}
            for case, stats in res["raw"].items():
                for name, ts in stats.items():
                    torch_raw[label].setdefault(case, {}).setdefault(name, []).extend(ts)
        load.append(os.getloadavg()[0])
    rows = []
    for (d, b), group in times.items():
        row = {"d": d, "batch": b}
        for name, ts in group.items():
            row[name] = float(np.median(ts))
        for label, raw in torch_raw.items():
            for name, ts in raw.get(f"d{d}-b{b}", {}).items():
                row[f"torch {name} ({label})"] = float(np.median(ts))
        rows.append(row)
    names = [n for n in rows[0] if n not in ("d", "batch")]
    print(f"\nMedian ms over {per_round * args.rounds} interleaved calls per case "
          f"(float32, CPU; 1-minute load average {min(load):.1f}-{max(load):.1f} "
          f"on {os.cpu_count()} cores)")
    print("| case | " + " | ".join(f"d={r['d']}, batch={r['batch']}" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r.get(name, float('nan')):.3g}" for r in rows)
              + " |")
    big = next(r for r in rows if r["d"] == 100 and r["batch"] == 1000)
    goals = {}
    torch_keys = [k for k in big if k.startswith("torch sample")]
    if torch_keys:
        t_sample = min(big[k] for k in torch_keys)
        t_grad = min(big[k] for k in big if k.startswith("torch rsample_grad"))
        goals = {"sample_ratio": big["stochbp sample"] / t_sample,
                 "pathwise_ratio": big["pathwise grad"] / t_grad,
                 "fourier_ratio": big["fourier(2) grad"] / t_grad}
        print(f"\nbatch 1000 x d = 100 against PyTorch's faster thread setting: "
              f"sample {goals['sample_ratio']:.2f}x (goal <= 1.5), pathwise grad "
              f"{goals['pathwise_ratio']:.2f}x and fourier(2) grad "
              f"{goals['fourier_ratio']:.2f}x torch rsample grad (goal <= 1)")
    var = variance_section(args.variance_draws, args.seed) if args.variance_draws > 1 else {}
    torch_var = {}
    if args.variance_draws > 1 and args.torch_python and os.path.exists(args.torch_python):
        res = subprocess.run([args.torch_python, os.path.join(HERE, "external",
                                                              "torch_gamma.py"),
                              "--repeats", "1", "--variance-draws", str(args.variance_draws),
                              "--seed", str(args.seed)], capture_output=True, text=True,
                             timeout=1800)
        if res.returncode == 0:
            torch_var = json.loads(res.stdout.strip().splitlines()[-1])["variance"]
    if var:
        print(f"\nPer-sample gradient variance (batch 1, {args.variance_draws} draws, "
              "summed over coordinates): shape k / scale mu")
        print("| estimator | " + " | ".join(f"d={d}" for d in DIMS) + " |")
        print("|---|" + "---|" * len(DIMS))
        for name in ("pathwise", "fourier(2)", "numpyro rsample"):
            print(f"| {name} | " + " | ".join(
                f"{var[f'd{d}'][name]['shape']:.4g} / {var[f'd{d}'][name]['scale']:.4g}"
                for d in DIMS) + " |")
        if torch_var:
            print("| torch rsample | " + " | ".join(
                f"{torch_var[f'd{d}']['shape']:.4g} / {torch_var[f'd{d}']['scale']:.4g}"
                for d in DIMS) + " |")
    out = {"rows": rows, "goals": goals, "variance": var, "torch_variance": torch_var,
           "torch": torch_meta, "load": load, "jax": jax.__version__,
           "stochbp": stochbp.__version__, "python": sys.version.split()[0]}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()

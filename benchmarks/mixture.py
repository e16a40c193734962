"""Cost and variance of stochbp's Gaussian-mixture gradients (Graves 2016).

Problem: a mixture of K = 10 Gaussians in D = 10 dimensions (diagonal or full
covariance), float32, 4096 samples per gradient, f(x) = sum_d x_d^2. We time

* pathwise: jax.jit(jax.grad) of stochbp.expectation(f, mixture, key, pathwise(),
  num_samples=4096) with respect to (logits, loc, scale or scale_tril);
* numpyro sample: jax.jit of numpyro's own MixtureSameFamily.sample(key, (4096,));
* score_function: the same gradient by REINFORCE (for reference);

interleaved round-robin with a rotating start, medians over --repeats calls. The goal is
pathwise / numpyro sample <= 2. Then the full-covariance gradient for D = 5..40 (its
cost must grow like K D^2 per sample, not D^3), TFP's and Pyro's reparameterised
mixtures on the same problem in their own environments (benchmarks/external/README.md;
goal: stochbp >= 3x faster per sample than both), and two variance comparisons:
pathwise against the score function on the mixture (per-sample gradient variance,
summed over each parameter array), and the location-scale ELBO with the analytic
against the Monte Carlo entropy.

    PYTHONPATH=src python benchmarks/mixture.py [--repeats 30] [--seed 0]
        [--tfp-python /tmp/tfpenv/bin/python] [--pyro-python /tmp/pyroenv/bin/python]
        [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd

import stochbp

K, D, NUM_SAMPLES = 10, 10, 4096
SCALING_DIMS = (5, 10, 20, 40)
RATIO_GOAL = 2.0
EXTERNAL_GOAL = 3.0
HERE = os.path.dirname(os.path.abspath(__file__))


def problem(k, d, seed):
    """Parameters shared with benchmarks/external/*.py (NumPy generator, float32)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=k)
    loc = rng.normal(size=(k, d))
    scale = rng.uniform(0.5, 1.5, size=(k, d))
    tril = np.tril(rng.normal(size=(k, d, d)) * 0.3, -1) + \
        np.eye(d) * rng.uniform(0.5, 1.2, size=(k, 1, d))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return {"diagonal": (f32(logits), f32(loc), f32(scale)),
            "full": (f32(logits), f32(loc), f32(tril))}


def make(kind, params):
    logits, loc, scale = params
    comp = (nd.Independent(nd.Normal(loc, scale), 1) if kind == "diagonal"
            else nd.MultivariateNormal(loc, scale_tril=scale))
    return nd.MixtureSameFamily(nd.Categorical(logits=logits), comp)


def f(x):
    return jnp.sum(x ** 2)


def f_lse(x):
    """A non-additive, non-quadratic test function: log sum_d exp(x_d) + (sum_d x_d)^2 / D."""
    return jax.nn.logsumexp(x) + jnp.sum(x) ** 2 / x.shape[-1]


FUNCTIONS = {"sumsq": f, "lse": f_lse}
FUNCTION_NAMES = {"sumsq": "f = sum x^2", "lse": "f = logsumexp(x) + (sum x)^2 / D"}


def grad_fn(kind, estimator, num_samples=NUM_SAMPLES, fn=f):
    def loss(params, key):
        return stochbp.expectation(fn, make(kind, params), key, estimator=estimator,
                                   num_samples=num_samples)
    return jax.jit(jax.grad(loss))


def sample_fn(kind, num_samples=NUM_SAMPLES):
    return jax.jit(lambda params, key: make(kind, params).sample(key, (num_samples,)))


def interleaved(cases, args_of, repeats, seed):
    """Median and IQR (ms) of every case, timed round-robin with a rotating start."""
    names = list(cases)
    for name in names:  # compile and warm up
        jax.block_until_ready(cases[name](*args_of(name, jax.random.key(seed + 99))))
    times = {name: [] for name in names}
    keys = jax.random.split(jax.random.key(seed), repeats)
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            call_args = args_of(name, keys[r])
            t0 = time.perf_counter()
            jax.block_until_ready(cases[name](*call_args))
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name in names:
        q1, med, q3 = np.percentile(np.asarray(times[name]) * 1e3, [25, 50, 75])
        out[name] = {"median_ms": float(med), "iqr_ms": float(q3 - q1)}
    return out


def timing_section(params, repeats, seed):
    print(f"\n1. Gradient time against numpyro's sampling time (K = {K}, D = {D}, "
          f"{NUM_SAMPLES} samples, float32; median of {repeats} interleaved calls)")
    results = {}
    head = f"{'covariance':<10} {'case':<16} {'median ms':>10} {'IQR ms':>8} " \
           f"{'x numpyro sample':>17}"
    print(head)
    print("-" * len(head))
    for kind in ("diagonal", "full"):
        cases = {"numpyro sample": sample_fn(kind),
                 "pathwise grad": grad_fn(kind, stochbp.pathwise()),
                 "score_fn grad": grad_fn(kind, stochbp.score_function())}
        stats = interleaved(cases, lambda name, key, kind=kind: (params[kind], key),
                            repeats, seed)
        base = stats["numpyro sample"]["median_ms"]
        for name, s in stats.items():
            s["ratio_to_sample"] = s["median_ms"] / base
            print(f"{kind:<10} {name:<16} {s['median_ms']:>10.2f} {s['iqr_ms']:>8.2f} "
                  f"{s['ratio_to_sample']:>17.2f}")
        ratio = stats["pathwise grad"]["ratio_to_sample"]
        stats["goal_met"] = bool(ratio <= RATIO_GOAL)
        print(f"{kind:<10} goal pathwise grad <= {RATIO_GOAL:.0f}x numpyro sample: "
              f"{ratio:.2f}x {'MET' if stats['goal_met'] else 'NOT MET'}")
        results[kind] = stats
    return results


def scaling_section(repeats, seed):
    print(f"\n2. Full-covariance gradient cost against D (K = {K}, {NUM_SAMPLES} samples): "
          "O(K D^2) per sample means the time ratio between doublings tends to 4, "
          "O(D^3) to 8")
    head = f"{'D':>4} {'pathwise ms':>12} {'us/sample':>10} {'x previous D':>13} " \
           f"{'numpyro sample ms':>18}"
    print(head)
    print("-" * len(head))
    rows, prev = [], None
    for d in SCALING_DIMS:
        params = problem(K, d, seed)["full"]
        cases = {"grad": grad_fn("full", stochbp.pathwise()), "sample": sample_fn("full")}
        stats = interleaved(cases, lambda name, key, p=params: (p, key),
                            repeats, seed)
        ms = stats["grad"]["median_ms"]
        growth = ms / prev if prev else float("nan")
        rows.append({"D": d, "grad_ms": ms, "us_per_sample": 1e3 * ms / NUM_SAMPLES,
                     "growth": growth, "sample_ms": stats["sample"]["median_ms"]})
        print(f"{d:>4} {ms:>12.2f} {1e3 * ms / NUM_SAMPLES:>10.2f} {growth:>13.2f} "
              f"{stats['sample']['median_ms']:>18.2f}")
        prev = ms
    logs = np.log([r["grad_ms"] for r in rows[-3:]]), np.log([r["D"] for r in rows[-3:]])
    slope = float(np.polyfit(logs[1], logs[0], 1)[0])
    print(f"log-log slope of time against D over D = {rows[-3]['D']}..{rows[-1]['D']}: "
          f"{slope:.2f} (2 for K D^2, 3 for D^3)")
    return {"rows": rows, "slope": slope}


def external_section(ours, args):
    print("\n3. Gradient time per sample beside TFP and Pyro (same problem, separate "
          "environments, medians)")
    results = {"stochbp": {kind: {"grad_us_per_sample": 1e3 * ours[kind]["pathwise grad"]
                                  ["median_ms"] / NUM_SAMPLES} for kind in ours}}
    for name, python, script in (("tfp", args.tfp_python, "tfp_mixture.py"),
                                 ("pyro", args.pyro_python, "pyro_mixture.py")):
        if not python:
            results[name] = {"error": f"not run (pass --{name}-python)"}
            continue
        if not os.path.exists(python):
            results[name] = {"error": f"interpreter {python} not found; see "
                                      "benchmarks/external/README.md"}
            continue
        cmd = [python, os.path.join(HERE, "external", script), "--repeats",
               str(args.repeats), "--seed", str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            results[name] = {"error": proc.stderr.strip().splitlines()[-1][:300]}
            continue
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    head = f"{'library':<28} {'covariance':<10} {'grad ms':>9} {'us/sample':>10} " \
           f"{'stochbp faster by':>18}"
    print(head)
    print("-" * len(head))
    goals = {}
    for kind in ("diagonal", "full"):
        mine = results["stochbp"][kind]["grad_us_per_sample"]
        print(f"{'stochbp ' + stochbp.__version__:<28} {kind:<10} "
              f"{mine * NUM_SAMPLES / 1e3:>9.2f} {mine:>10.2f} {'':>18}")
        for name in ("tfp", "pyro"):
            res = results[name]
            label = name if "versions" not in res else \
                f"{name} " + " ".join(f"{k} {v}" for k, v in res["versions"].items()
                                      if k in ("tfp", "pyro", "jax", "torch"))
            case = res.get("cases", {}).get(kind, {"error": res.get("error", "?")})
            if "error" in case:
                print(f"{label[:28]:<28} {kind:<10} {'-':>9} {'-':>10} "
                      f"  ({case['error'][:70]})")
                continue
            speedup = case["grad_us_per_sample"] / mine
            goals[f"{name}/{kind}"] = bool(speedup >= EXTERNAL_GOAL)
            print(f"{label[:28]:<28} {kind:<10} {case['grad_s'] * 1e3:>9.2f} "
                  f"{case['grad_us_per_sample']:>10.2f} {speedup:>17.1f}x")
    for name, met in goals.items():
        print(f"goal stochbp >= {EXTERNAL_GOAL:.0f}x faster than {name}: "
              f"{'MET' if met else 'NOT MET'}")
    results["goals"] = goals
    return results


def variance_section(params, seed, num_draws):
    print(f"\n4. Per-sample gradient variance, pathwise (Graves) against the score "
          f"function ({num_draws} single-sample gradients, summed over each array; "
          "'top 0.5%' is the share of the pathwise sum of squares due to the 0.5% most "
          "extreme draws)")
    head = f"{'covariance':<10} {'parameter':<11} {'pathwise':>12} {'score_fn':>12} " \
           f"{'score/pathwise':>15} {'top 0.5%':>9}"
    print(head)
    print("-" * len(head))
    out = {}
    for kind in ("diagonal", "full"):
        draws = {}
        for est in (stochbp.pathwise(), stochbp.score_function()):
            draws[est.name] = stochbp.diagnostics.gradient_estimates(
                f, lambda p, kind=kind: make(kind, p), params[kind], jax.random.key(seed),
                estimator=est, num_samples=1, num_draws=num_draws)
        rows = {}
        for i, pname in enumerate(("logits", "loc", "scale" if kind == "diagonal"
                                   else "scale_tril")):
            g = {name: np.asarray(d[i], np.float64).reshape(num_draws, -1)
                 for name, d in draws.items()}
            pv, sv = (float(np.sum(np.var(g[name], axis=0, ddof=1)))
                      for name in ("pathwise", "score_function"))
            dev = np.sum((g["pathwise"] - g["pathwise"].mean(0)) ** 2, axis=1)
            top = np.sort(dev)[::-1][:max(1, num_draws // 200)]
            share = float(top.sum() / dev.sum())
            rows[pname] = {"pathwise": pv, "score_function": sv, "ratio": sv / pv,
                           "pathwise_top_share": share}
            print(f"{kind:<10} {pname:<11} {pv:>12.4g} {sv:>12.4g} {sv / pv:>15.2f} "
                  f"{share:>9.0%}")
        out[kind] = rows
    return out


def elbo_section(seed, num_draws):
    print(f"\n5. Location-scale ELBO: analytic against Monte Carlo entropy ({num_draws} "
          "single-sample estimates; target g = N(m, diag s^2), d = 10)")
    rng = np.random.default_rng(seed)
    m = jnp.asarray(rng.normal(size=10))
    s = jnp.asarray(rng.uniform(0.5, 1.5, size=10))
    log_g = lambda z: jnp.sum(jax.scipy.stats.norm.logpdf(z, m, s))  # noqa: E731
    qs = {"Normal": (lambda t: nd.Normal(t[0], t[1]),
                     (jnp.zeros(10), jnp.ones(10))),
          "Laplace": (lambda t: nd.Laplace(t[0], t[1]),
                      (jnp.zeros(10), 0.7 * jnp.ones(10))),
          "MultivariateNormal": (lambda t: nd.MultivariateNormal(t[0],
                                                                 scale_tril=jnp.tril(t[1])),
                                 (jnp.zeros(10), jnp.eye(10)))}
    head = f"{'q':<19} {'entropy':<12} {'var grad loc':>13} {'var grad scale':>15} " \
           f"{'var value':>10}"
    print(head)
    print("-" * len(head))
    keys = jax.random.split(jax.random.key(seed), num_draws)
    out = {}
    for name, (mk, theta) in qs.items():
        for entropy in ("analytic", "monte_carlo"):
            one = lambda t, k, mk=mk, entropy=entropy: stochbp.location_scale_elbo(  # noqa
                log_g, mk(t), k, entropy=entropy)
            vals, grads = jax.jit(jax.vmap(jax.value_and_grad(one), in_axes=(None, 0)))(
                theta, keys)
            row = {"grad_loc": float(jnp.sum(grads[0].var(0))),
                   "grad_scale": float(jnp.sum(grads[1].var(0))),
                   "value": float(vals.var())}
            out[f"{name}/{entropy}"] = row
            print(f"{name:<19} {entropy:<12} {row['grad_loc']:>13.4g} "
                  f"{row['grad_scale']:>15.4g} {row['value']:>10.4g}")
    return out


# ---------------------------------------------------------------- 6. bounded variance
TABLE_SIZES = (("diagonal", 2, 1), ("diagonal", 5, 5), ("diagonal", 10, 10),
               ("diagonal", 20, 50), ("full", 10, 10))
SAMPLES_PER_COMPONENT = 4  # S = 4 K evaluations of f per gradient draw, every estimator
TIME_SAMPLES = 2048  # samples per timed gradient call (rounded up to a multiple of K)
OURS = {"marginal": lambda: stochbp.mixture_marginal(),
        "marginal uniform": lambda: stochbp.mixture_marginal("uniform"),
        "marginal stratified": lambda: stochbp.mixture_marginal(noise="stratified"),
        "marginal uniform stratified":
            lambda: stochbp.mixture_marginal("uniform", noise="stratified"),
        "marginal antithetic": lambda: stochbp.mixture_marginal(noise="antithetic"),
        "marginal fourier": lambda: stochbp.mixture_marginal(component_rule="fourier"),
        "marginal stratified fourier":
            lambda: stochbp.mixture_marginal(noise="stratified", component_rule="fourier"),
        "marginal uniform stratified fourier":
            lambda: stochbp.mixture_marginal("uniform", noise="stratified",
                                             component_rule="fourier"),
        "pathwise (Graves)": stochbp.pathwise,
        "score function": stochbp.score_function}


def blocks(kind):
    return ("logits", "loc", "scale" if kind == "diagonal" else "scale_tril")


def per_sample_variance(grads, num_draws, num_samples):
    """Trace of the covariance of one block's gradient, times the f evaluations per
    draw: the variance of a single-evaluation estimate at equal compute."""
    g = np.asarray(grads, np.float64).reshape(num_draws, -1)
    return float(np.sum(np.var(g, axis=0, ddof=1)) * num_samples)


def peers_variance(args, sizes, num_draws):
    """Run the peer scripts' variance mode; {peer: {"kind/KxD": {...}}} or errors."""
    out = {}
    spec = ",".join(f"{kind}:{k}x{d}" for kind, k, d in sizes)
    for name, python, script in (("tfp", args.tfp_python, "tfp_mixture.py"),
                                 ("pyro", args.pyro_python, "pyro_mixture.py")):
        if not python or not os.path.exists(python):
            out[name] = {"error": f"not run (pass --{name}-python; see "
                                  "benchmarks/external/README.md)"}
            continue
        cmd = [python, os.path.join(HERE, "external", script), "--variance", spec,
               "--draws", str(num_draws), "--samples-per-component",
               str(SAMPLES_PER_COMPONENT), "--time-samples", str(TIME_SAMPLES),
               "--repeats", str(args.repeats), "--seed", str(args.seed),
               "--function", args.function]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            out[name] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
            continue
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])["variance"]
    return out


def bounded_variance_section(args, num_draws):
    fn = FUNCTIONS[args.function]
    print(f"\n6. Per-sample gradient variance (trace over each block, "
          f"{FUNCTION_NAMES[args.function]}, float32; "
          f"{num_draws} draws of S = {SAMPLES_PER_COMPONENT} K evaluations of f, variance "
          "x S) and variance x time per sample (us); 'marginal' = "
          "stochbp.mixture_marginal() (proportional allocation, common noise, iid noise); "
          "'stratified' / 'antithetic': noise=\"stratified\" / \"antithetic\"")
    sizes = TABLE_SIZES if not args.sizes else tuple(
        (kind, int(k), int(d)) for kind, kd in (c.split(":") for c in args.sizes.split(","))
        for k, d in [kd.split("x")])
    rows = {}
    for kind, k, d in sizes:
        params = problem(k, d, args.seed)[kind]
        label = f"{kind}/{k}x{d}"
        n_var = SAMPLES_PER_COMPONENT * k
        n_time = k * -(-TIME_SAMPLES // k)
        row = {}
        ours = {name: OURS[name] for name in (args.estimators or OURS)}
        for name, factory in ours.items():
            est = factory()
            g = stochbp.diagnostics.gradient_estimates(
                fn, lambda p, kind=kind: make(kind, p), params,
                jax.random.key(args.seed + 1), estimator=est, num_samples=n_var,
                num_draws=num_draws)
            row[name] = {b: per_sample_variance(g[i], num_draws, n_var)
                         for i, b in enumerate(blocks(kind))}
            row[name]["finite"] = bool(all(np.all(np.isfinite(np.asarray(a))) for a in g))
        cases = {name: grad_fn(kind, factory(), n_time, fn) for name, factory in ours.items()}
        times = interleaved(cases, lambda name, key, p=params: (p, key), args.repeats,
                            args.seed)
        for name in ours:
            row[name]["us_per_sample"] = 1e3 * times[name]["median_ms"] / n_time
        rows[label] = row
        print(f"  measured {label}: " + json.dumps(row), flush=True)
    peers = peers_variance(args, sizes, num_draws)
    print_bounded_tables(rows, peers)
    return {"rows": rows, "peers": peers, "function": args.function}


def print_bounded_tables(rows, peers):
    """The issue-13 table: per-sample variance, then variance x time per sample, with
    the column that is lowest in each row."""
    columns = list(OURS) + ["tfp", "pyro"]
    names = {"tfp": "TFP (same rule)", "pyro": "Pyro MixtureOfDiagNormals"}

    def value(label, col, block, times):
        if col in OURS:
            r = rows[label].get(col)
            if r is None:  # not measured in the files given
                return None
        else:
            r = peers.get(col, {})
            r = None if "error" in r else r.get(label)
            if r is None or "error" in r:
                return None
        return r[block] * (r["us_per_sample"] if times else 1.0)

    for times in (False, True):
        title = "variance x time per sample (us)" if times else "per-sample variance"
        print(f"\n{title}:\n")
        head = ["K, D", "block"] + [names.get(c, "stochbp " + c) for c in columns] + \
            ["lowest"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for label in rows:
            kind, kd = label.split("/")
            for block in blocks(kind):
                vals = {c: value(label, c, block, times) for c in columns}
                best = min((v, c) for c, v in vals.items()
                           if v is not None and np.isfinite(v))[1]  # NaN: non-finite grads
                cells = ["–" if v is None else f"{v:.2g}" for v in vals.values()]
                print(f"| {kd.replace('x', ', ')} {kind} | {block} | " + " | ".join(cells)
                      + f" | {names.get(best, best)} |")
    for name in ("tfp", "pyro"):
        if "error" in peers.get(name, {}):
            print(f"{name}: {peers[name]['error']}")


def tables_from_json(paths):
    """Merge the section-6 results of several --json files (or a peer script's
    --variance output; later files win) and print the tables."""
    rows, peers = {}, {"tfp": {}, "pyro": {}}
    for path in paths:
        with open(path) as fh:
            res = json.load(fh)
        if "library" in res:  # a peer script's own --variance output
            peers[res["library"]].update(res["variance"])
            continue
        res = res["bounded_variance"]
        for label, row in res["rows"].items():  # per estimator: files may hold subsets
            rows.setdefault(label, {}).update(row)
        for name in peers:
            got = res["peers"].get(name, {})
            if "error" not in got:  # a peer not run in that file leaves the others' rows
                peers[name].update(got)
    print_bounded_tables(rows, peers)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30, help="timed calls per case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=2000, help="gradients per variance row")
    p.add_argument("--tfp-python", help="python of the TFP environment")
    p.add_argument("--pyro-python", help="python of the Pyro environment")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--only-variance-table", action="store_true",
                   help="run only section 6 (the bounded-variance table)")
    p.add_argument("--sizes", help="section 6 sizes, e.g. diagonal:2x1,full:10x10")
    p.add_argument("--variance-draws", type=int, default=1000,
                   help="gradient draws per estimator in section 6")
    p.add_argument("--function", choices=sorted(FUNCTIONS), default="sumsq",
                   help="section 6's f: sumsq (sum x^2) or lse (logsumexp(x) + "
                        "(sum x)^2 / D, neither additive nor quadratic)")
    p.add_argument("--estimators", nargs="+", choices=list(OURS), metavar="NAME",
                   help="section 6: measure only these of stochbp's settings "
                        "(merge with earlier files through --tables-from)")
    p.add_argument("--tables-from", nargs="+", metavar="JSON",
                   help="print section 6's tables from earlier --json files and exit")
    args = p.parse_args(argv)
    if args.tables_from:
        tables_from_json(args.tables_from)
        return 0
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    t_start = time.perf_counter()
    print(f"jax {jax.__version__} ({jax.default_backend()}), numpyro {numpyro.__version__}, "
          f"python {platform.python_version()}, {os.cpu_count()} CPU cores")
    params = problem(K, D, args.seed)
    result = {"versions": {"jax": jax.__version__, "numpyro": numpyro.__version__,
                           "python": platform.python_version(),
                           "cpu_count": os.cpu_count()}}
    if not args.only_variance_table:
        result["timing"] = timing_section(params, args.repeats, args.seed)
        result["scaling"] = scaling_section(args.repeats, args.seed)
        result["external"] = external_section(result["timing"], args)
        result["variance"] = variance_section(params, args.seed, args.draws)
        result["elbo"] = elbo_section(args.seed, args.draws)
    result["bounded_variance"] = bounded_variance_section(args, args.variance_draws)
    result["total_runtime_s"] = time.perf_counter() - t_start
    print(f"\nTotal runtime {result['total_runtime_s']:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

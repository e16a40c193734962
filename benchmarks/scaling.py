"""Step time of data-parallel training on 1, 2, 4 and 8 devices (jax.sharding).

Models of the paper's Appendix B (``stochbp.experiments.discrete_models``): the
categorical VAE (d = 20 variables of K = 10 classes, two tanh layers of 200 units each
side) and the two-layer linear sigmoid belief net (2 x 200 Bernoulli units), each
trained with ``fourier`` (S = 1, the paper's CSB / BSB) and ``gumbel_softmax``
(temperature 0.5; on the SBN the binary Concrete relaxation, with the inner expectation
nested as for REBAR/RELAX). One step = the experiment's training step: the surrogate
ELBO's gradient (with the categorical VAE's chunk_size = 8, the experiment's default)
and an Adam update, jitted, on a batch of ``--batch`` synthetic binary images
(default 96: divisible by 1, 2, 4 and 8, close to the paper's 100) split over a
one-axis mesh ``("data",)`` with ``NamedSharding``; parameters and optimiser state
replicated. Every (model, estimator, devices) step is compiled and warmed up, then all
are timed interleaved round-robin for ``--repeats`` rounds; medians are reported.

The Fourier step's distance from its own limit: the multiply-adds of the step's matrix
products, counted on its jaxpr after differentiation (:func:`matmul_flops`: every
``dot_general``, forward and backward, loops counted per iteration), F = 2 x that
count; the same run times a float32 matrix product (``--matmul`` square, 2 n^3
operations) to get the machine's matrix-multiply throughput R, interleaved with the
steps; the limit is F / R and the distance is step time / (F / R) (goal <= 1.5).
Elementwise work (the rank-one updates of the substitutions, softplus and sigmoid, the
optimiser) is left out of F, so the distance is not flattered by it. For comparison
the table also gives XLA's cost analysis of the compiled one-device step
(``cost_analysis()``: "flops" counts elementwise operations too, and loop bodies once,
so it is taken on the step without per_example's chunks), and the script times the
transcendental operations XLA counts (log1p(exp(-|x|))) to print the distance from
both limits together.

On a CPU the host platform is split into 8 devices (XLA_FLAGS, set before JAX starts),
which share the same cores: the CPU run checks the code path, its scaling means nothing.
On a GPU machine the same command uses the GPUs (the flag only affects the CPU
platform); counts above the number of devices are skipped.

    PYTHONPATH=src python benchmarks/scaling.py [--repeats 10] [--devices 1,2,4,8]
                                                [--json out.json]
"""
from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import stochbp  # noqa: E402
from stochbp.experiments import discrete_models as dm  # noqa: E402

MODELS = {"categorical-vae": dm.ModelSpec("categorical_vae", chunk_size=8),
          "sbn-2-layers": dm.ModelSpec("sbn", layers=2)}
ESTIMATORS = {"fourier": lambda: stochbp.fourier(),
              "gumbel_softmax": lambda: stochbp.gumbel_softmax(0.5)}
GOAL = 1.5


def make_step(spec: dm.ModelSpec, est_name: str):
    """jit((params, opt_state, x, key) -> (params, opt_state, loss)): one Adam step."""
    est = ESTIMATORS[est_name]()
    # fourier evaluates F at binary z1 only: layer-wise inner layer; a relaxation
    # differentiates F at relaxed z1: nested inner expectation
    inner = dm.Inner(est, None, nested=est_name != "fourier") if spec.layers == 2 else None
    opt = optax.adam(1e-4)

    def loss(params, x, key):
        value, _ = dm.surrogate_elbo(spec, params, x, key, estimator=est, num_samples=1,
                                     inner=inner)
        return -value

    @jax.jit
    def step(params, opt_state, x, key):
        value, g = jax.value_and_grad(loss)(params, x, key)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value
    return step, opt


def transcendental_throughput(size: int, repeats: int) -> float:
    """Transcendental operations per second on the first device: a jitted
    log1p(exp(-|x|)) (softplus's transcendental part, 2 operations per element) on
    ``size`` float32 values (median over repeats)."""
    x = jax.random.normal(jax.random.PRNGKey(2), (size,), jnp.float32)
    fn = jax.jit(lambda x: jnp.log1p(jnp.exp(-jnp.abs(x))))
    jax.block_until_ready(fn(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t0)
    return 2.0 * size / statistics.median(times)


def step_cost(spec: dm.ModelSpec, est_name: str, params, opt_state, x, key) -> dict:
    """XLA's cost analysis of the one-device step. XLA counts a loop body once, so the
    chunked schedule (per_example's chunk_size, a sequential loop) is counted on the
    same step without chunks: the same operations, all in one vmapped pass."""
    import dataclasses
    step, _ = make_step(dataclasses.replace(spec, chunk_size=None), est_name)
    cost = step.lower(params, opt_state, x, key).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    real_step, _ = make_step(spec, est_name)
    return {"flops": float(cost.get("flops", 0.0)),
            "transcendentals": float(cost.get("transcendentals", 0.0)),
            "matmul_flops": matmul_flops(
                jax.make_jaxpr(real_step)(params, opt_state, x, key).jaxpr)}


def _sub_jaxprs(value):
    from jax.extend import core as jcore
    items = value if isinstance(value, (tuple, list)) else [value]
    for v in items:
        if isinstance(v, jcore.ClosedJaxpr):
            yield v.jaxpr
        elif isinstance(v, jcore.Jaxpr):
            yield v


def matmul_flops(jaxpr) -> float:
    """2 x the multiply-adds of every matrix product (``dot_general``) in a jaxpr: for
    each, 2 x (batch size) x (lhs free size) x (rhs free size) x (contracted size).
    Loops count their body once per iteration (``scan``'s length); a ``cond`` counts its
    dearest branch; other nested jaxprs (jit, custom_jvp/vjp, remat) once. Elementwise
    work -- the rank-one updates of the substitutions, softplus, the optimiser -- is not
    counted: this is the work a matrix-multiply unit could do, and the step is traced
    after differentiation, so the backward pass's products are in it."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
            lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
            size = lambda shape, axes: float(np.prod([shape[a] for a in axes]))  # noqa
            free_l = [a for a in range(len(lhs)) if a not in lc and a not in lb]
            free_r = [a for a in range(len(rhs)) if a not in rc and a not in rb]
            total += 2.0 * size(lhs, lb) * size(lhs, free_l) * size(rhs, free_r) \
                * size(lhs, lc)
            continue
        subs = [j for v in eqn.params.values() for j in _sub_jaxprs(v)]
        if not subs:
            continue
        if name == "cond":
            total += max(matmul_flops(j) for j in subs)
        elif name == "while":
            raise ValueError("a while loop's trip count is unknown: count it by hand")
        else:
            total += sum(matmul_flops(j) for j in subs) * eqn.params.get("length", 1)
    return total


def matmul_throughput(n: int, repeats: int) -> float:
    """Floating-point operations per second of a jitted float32 n x n matrix product
    on the first device (median over repeats)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(mm(a, b))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a, b))
        times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--devices", default="1,2,4,8")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--estimators", default=",".join(ESTIMATORS))
    ap.add_argument("--matmul", type=int, default=1024, help="size of the timed product")
    ap.add_argument("--json", help="write the measurements here")
    args = ap.parse_args(argv)

    devices = jax.devices()
    counts = [int(c) for c in args.devices.split(",")]
    skipped = [c for c in counts if c > len(devices) or args.batch % c]
    counts = [c for c in counts if c not in skipped]
    print(f"# {len(devices)} {devices[0].platform} device(s) ({devices[0].device_kind}); "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}; jax {jax.__version__}; batch "
          f"{args.batch}; float32" + (f"; skipped device counts {skipped}" if skipped
                                      else ""))
    rng = np.random.default_rng(0)
    x_host = (rng.random((args.batch, dm.PIXELS)) < 0.2).astype(np.float32)
    cases = {}
    for model in args.models.split(","):
        spec = MODELS[model]
        params0 = dm.init_params(spec, jax.random.PRNGKey(0), x_host.mean(0))
        for est_name in args.estimators.split(","):
            step, opt = make_step(spec, est_name)
            for n in counts:
                mesh = Mesh(np.array(devices[:n]), ("data",))
                rep = NamedSharding(mesh, P())
                params = jax.device_put(params0, rep)
                opt_state = jax.device_put(opt.init(params0), rep)
                x = jax.device_put(x_host, NamedSharding(mesh, P("data")))
                key = jax.device_put(jax.random.PRNGKey(1), rep)
                t0 = time.perf_counter()
                compiled = step.lower(params, opt_state, x, key).compile()
                compile_s = time.perf_counter() - t0
                if n == counts[0]:
                    cost = step_cost(spec, est_name, params, opt_state, x, key)
                run = lambda c=compiled, a=(params, opt_state, x, key): c(*a)  # noqa: E731
                jax.block_until_ready(run())
                cases[(model, est_name, n)] = {"run": run, "times": [],
                                               "compile_s": compile_s,
                                               **cost}
    throughputs, trans = [], []
    keys = list(cases)
    for r in range(args.repeats):
        throughputs.append(matmul_throughput(args.matmul, 3))
        trans.append(transcendental_throughput(1 << 22, 3))
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t0 = time.perf_counter()
            jax.block_until_ready(cases[k]["run"]())
            cases[k]["times"].append(time.perf_counter() - t0)
    rate, trate = statistics.median(throughputs), statistics.median(trans)

    rows = []
    print(f"\nmatrix-multiply throughput (float32 {args.matmul}^2, one device, median "
          f"of {args.repeats} rounds interleaved with the steps): {rate / 1e9:.1f} GFLOP/s; "
          f"transcendental throughput (log1p(exp(-|x|)), float32): {trate / 1e9:.2f} G/s\n")
    print("| model | estimator | devices | step (ms, median) | speed-up vs 1 | "
          "matmul GFLOP per step (2 x multiply-adds) | XLA GFLOP (all operations) | "
          "step / (matmul GFLOP ÷ matmul rate) |")
    print("|---|---|---|---|---|---|---|---|")
    for (model, est_name, n), c in cases.items():
        med = statistics.median(c["times"])
        base = statistics.median(cases[(model, est_name, counts[0])]["times"])
        one = cases[(model, est_name, counts[0])]
        limit = one["matmul_flops"] / rate
        distance = med / limit if n == 1 and limit > 0 else None
        rows.append({"model": model, "estimator": est_name, "devices": n,
                     "median_ms": 1e3 * med, "speedup": base / med,
                     "matmul_gflop": one["matmul_flops"] / 1e9,
                     "xla_gflop": one["flops"] / 1e9,
                     "transcendentals": one["transcendentals"],
                     "limit_ms": 1e3 * limit, "distance": distance,
                     "compile_s": c["compile_s"], "times_ms": [1e3 * t for t in c["times"]]})
        print(f"| {model} | {est_name} | {n} | {1e3 * med:.1f} | {base / med:.2f} | "
              f"{one['matmul_flops'] / 1e9:.3f} | {one['flops'] / 1e9:.3f} | "
              + (f"{distance:.2f}" if distance is not None else "–") + " |")
    for model in args.models.split(","):
        if "fourier" in args.estimators.split(",") and 1 in counts:
            r = next(r for r in rows if r["model"] == model and r["estimator"] == "fourier"
                     and r["devices"] == 1)
            verdict = "meets" if r["distance"] <= GOAL else "misses"
            with_t = r["limit_ms"] + 1e3 * r["transcendentals"] / trate
            print(f"\n{model}, fourier on 1 device: {r['median_ms']:.1f} ms against a "
                  f"limit of {r['limit_ms']:.1f} ms ({r['matmul_gflop']:.3f} GFLOP of "
                  f"matrix products at "
                  f"{rate / 1e9:.1f} GFLOP/s): distance {r['distance']:.2f}, {verdict} the "
                  f"goal <= {GOAL}. Its {r['transcendentals'] / 1e6:.1f} M transcendental "
                  f"operations at the measured {trate / 1e9:.2f} G/s add "
                  f"{with_t - r['limit_ms']:.1f} ms: step / (both limits) = "
                  f"{r['median_ms'] / with_t:.2f}")
            r["limit_with_transcendentals_ms"] = with_t
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "matmul_gflops": rate / 1e9,
                       "transcendentals_per_s": trate,
                       "load_average": os.getloadavg(), "batch": args.batch,
                       "platform": devices[0].platform, "jax": jax.__version__}, fh,
                      indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

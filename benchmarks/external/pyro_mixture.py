"""Pyro's MixtureOfDiagNormals on the stochbp mixture benchmark problem (diagonal only).

Runs in its own virtual environment (PyTorch; see README.md beside this file). Prints
one JSON object on stdout with the median seconds of the gradient of
mean_s sum_d x_sd^2 with respect to (component logits, locs, coordinate scales) and of
plain sampling, for 4096 samples, K = 10, D = 10, float32, on the CPU.
Pyro has no per-component full-covariance mixture with a reparameterised sampler
(MixtureOfDiagNormalsSharedCovariance shares one covariance), so the full case is
reported as unsupported.
    /tmp/pyroenv/bin/python benchmarks/external/pyro_mixture.py [--repeats 30]

Variance mode (benchmarks/mixture.py, section 6): ``--variance diagonal:2x1,...
[--function sumsq|lse]`` (f = sum x^2, or logsumexp(x) + (sum x)^2 / D) prints
{"variance": {"diagonal/2x1": {"logits": v, "loc": v, "scale": v, "us_per_sample": t}}},
v the trace of the covariance of one block's gradient over ``--draws`` independent
gradients of S = samples-per-component x K samples each, times S (the variance of a
one-sample gradient), and t the median time per sample of a gradient of --time-samples
(rounded up to a multiple of K) samples.
"""
import argparse
import json
import sys
import time

import numpy as np
import pyro
import torch
from pyro.distributions import MixtureOfDiagNormals


def problem(k, d, seed):
    """Same parameters as benchmarks/mixture.py (NumPy generator, float32)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=k)
    loc = rng.normal(size=(k, d))
    scale = rng.uniform(0.5, 1.5, size=(k, d))
    t = lambda a: torch.tensor(a, dtype=torch.float32, requires_grad=True)  # noqa: E731
    return t(logits), t(loc), t(scale)


def test_function(name, x):
    """f of every sample (last axis D): sum x^2, or logsumexp(x) + (sum x)^2 / D."""
    if name == "lse":
        return torch.logsumexp(x, -1) + x.sum(-1) ** 2 / x.shape[-1]
    return (x ** 2).sum(-1)


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def variance_mode(args):
    out = {}
    for case in args.variance.split(","):
        kind, size = case.split(":")
        k, d = (int(v) for v in size.split("x"))
        label = f"{kind}/{k}x{d}"
        if kind != "diagonal":
            out[label] = {"error": "not available in Pyro (no per-component "
                                   "full-covariance reparameterised mixture)"}
            continue
        logits, loc, scale = problem(k, d, args.seed)
        n = args.samples_per_component * k

        def grad(num):
            x = MixtureOfDiagNormals(loc, scale, logits).rsample((num,))
            return torch.autograd.grad(test_function(args.function, x).mean(),
                                       (logits, loc, scale))

        draws = [grad(n) for _ in range(args.draws)]
        row = {}
        for i, name in enumerate(("logits", "loc", "scale")):
            g = torch.stack([dr[i].reshape(-1) for dr in draws]).double()
            row[name] = float(g.var(0, unbiased=True).sum()) * n
        row["finite"] = bool(all(torch.isfinite(a).all() for dr in draws for a in dr))
        n_time = k * -(-args.time_samples // k)
        row["us_per_sample"] = 1e6 * median_time(lambda: grad(n_time), args.repeats) / n_time
        out[label] = row
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--dims", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--variance", help="variance mode: sizes, e.g. diagonal:2x1,diagonal:5x5")
    p.add_argument("--draws", type=int, default=1000, help="variance mode: gradients")
    p.add_argument("--samples-per-component", type=int, default=4)
    p.add_argument("--function", choices=("sumsq", "lse"), default="sumsq",
                   help="variance mode: f = sum x^2, or logsumexp(x) + (sum x)^2 / D")
    p.add_argument("--time-samples", type=int, default=2048)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.variance:
        versions = {"pyro": pyro.__version__, "torch": torch.__version__}
        json.dump({"library": "pyro", "versions": versions, "function": args.function,
                   "variance": variance_mode(args)}, sys.stdout)
        print()
        return 0
    logits, loc, scale = problem(args.components, args.dims, args.seed)
    n = args.samples

    def grad():
        d = MixtureOfDiagNormals(loc, scale, logits)
        x = d.rsample((n,))
        loss = (x ** 2).sum(-1).mean()
        return torch.autograd.grad(loss, (logits, loc, scale))

    def sample():
        with torch.no_grad():
            return MixtureOfDiagNormals(loc, scale, logits).sample((n,))

    g = grad()
    finite = bool(all(torch.isfinite(a).all() for a in g))
    t_grad = median_time(grad, args.repeats)
    t_sample = median_time(sample, args.repeats)
    versions = {"pyro": pyro.__version__, "torch": torch.__version__,
                "torch_threads": torch.get_num_threads()}
    out = {"library": "pyro", "versions": versions,
           "samples": n,
           "cases": {"diagonal": {"grad_s": t_grad, "sample_s": t_sample,
                                  "grad_us_per_sample": 1e6 * t_grad / n, "finite": finite},
                     "full": {"error": "not available in Pyro (no per-component "
                                       "full-covariance reparameterised mixture)"}}}
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

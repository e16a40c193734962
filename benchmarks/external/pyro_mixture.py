"""Pyro's MixtureOfDiagNormals on the stochbp mixture benchmark problem (diagonal only).

Runs in its own virtual environment (PyTorch; see README.md beside this file). Prints
one JSON object on stdout with the median seconds of the gradient of
mean_s sum_d x_sd^2 with respect to (component logits, locs, coordinate scales) and of
plain sampling, for 4096 samples, K = 10, D = 10, float32, on the CPU.
Pyro has no per-component full-covariance mixture with a reparameterised sampler
(MixtureOfDiagNormalsSharedCovariance shares one covariance), so the full case is
reported as unsupported.
    /tmp/pyroenv/bin/python benchmarks/external/pyro_mixture.py [--repeats 30]
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


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--dims", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
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

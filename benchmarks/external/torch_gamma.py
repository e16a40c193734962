"""PyTorch's gamma sampler and pathwise gradient on gamma toy problem 1 (peer of
benchmarks/gamma.py; run it in its own environment, see README.md here).

Problem: z ~ Gamma(k, rate = 1/mu) with d independent coordinates, k = mu = 1 (the
paper's initial point), f(z) = sum_j (z_j - 0.49)^2 averaged over ``batch`` samples,
float32, CPU. Timed (medians of interleaved calls, milliseconds):

* sample: ``torch.distributions.Gamma(k, rate).sample((batch,))``;
* rsample_grad: the gradient of mean_s f(z_s) with respect to (k, mu) through
  ``rsample`` (PyTorch's implicit reparameterisation of the gamma sampler), forward
  and backward;

and the per-sample variance of that gradient (over ``--variance-draws`` draws at batch 1),
summed over coordinates, for the shape and the scale. Prints one JSON object.

    /tmp/torchenv/bin/python benchmarks/external/torch_gamma.py --repeats 30
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

EPS = 0.49


def f_mean(z):
    return ((z - EPS) ** 2).sum(-1).mean()


def cases(d, batch):
    k = torch.ones(d, dtype=torch.float32, requires_grad=True)
    mu = torch.ones(d, dtype=torch.float32, requires_grad=True)

    def sample():
        with torch.no_grad():
            return torch.distributions.Gamma(k, 1.0 / mu).sample((batch,))

    def rsample_grad():
        z = torch.distributions.Gamma(k, 1.0 / mu).rsample((batch,))
        return torch.autograd.grad(f_mean(z), (k, mu))

    return {"sample": sample, "rsample_grad": rsample_grad}, (k, mu)


def interleaved(fns, repeats, raw):
    names = list(fns)
    for name in names:
        fns[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    raw.update({name: [1e3 * x for x in t] for name, t in times.items()})
    return {name: {"median_ms": float(np.median(np.asarray(t) * 1e3)),
                   "iqr_ms": float(np.subtract(*np.percentile(np.asarray(t) * 1e3,
                                                               [75, 25])))}
            for name, t in times.items()}


def variance(d, draws):
    """Per-sample variance of the rsample gradient (batch 1), summed over coordinates."""
    fns, _ = cases(d, 1)
    gk, gmu = zip(*(fns["rsample_grad"]() for _ in range(draws)))
    gk, gmu = torch.stack(gk).numpy(), torch.stack(gmu).numpy()
    return {"shape": float(gk.var(axis=0, ddof=1).sum()),
            "scale": float(gmu.var(axis=0, ddof=1).sum())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dims", default="1,100")
    parser.add_argument("--batches", default="1,1000")
    parser.add_argument("--variance-draws", type=int, default=2000)
    parser.add_argument("--raw", action="store_true", help="also print every time (ms)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    out = {"versions": {"torch": torch.__version__, "python": platform.python_version()},
           "threads": torch.get_num_threads(), "cases": {}, "variance": {}, "raw": {}}
    for d in (int(x) for x in args.dims.split(",")):
        for batch in (int(x) for x in args.batches.split(",")):
            fns, _ = cases(d, batch)
            raw = out["raw"].setdefault(f"d{d}-b{batch}", {})
            out["cases"][f"d{d}-b{batch}"] = interleaved(fns, args.repeats, raw)
        if args.variance_draws > 1:
            out["variance"][f"d{d}"] = variance(d, args.variance_draws)
    if not args.raw:
        del out["raw"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Wall-clock cost of the categorical Fourier rule (Eq. 18) against Gumbel-softmax.

Two models of the paper's Appendix B (Table 3), on a batch of n = 100 binary 784-pixel
images (synthetic: the timing does not depend on pixel values), each data point with its
own latent z of d = 20 categorical variables with K = 10 classes:

  (i)  categorical VAE: linear encoder x -> logits (784 -> 20 x 10); decoder with a linear
       first layer from the 200-dim one-hot z to 200 tanh units, then 784 Bernoulli
       logits; f = decoder log-likelihood of the batch;
  (ii) one linear layer: the same encoder; decoder one-hot z -> linear -> 784 logits.

Both declare their structure: f = stochbp.per_example(stochbp.linear(g, A, b), X) with A
of shape (hidden, d, K) acting on the one-hot z, so the Fourier rule re-evaluates only
one example's term per changed coordinate and moves the first layer's pre-activation by
a rank-one update instead of recomputing the matmul. The very same f serves
gumbel_softmax, which feeds it relaxed one-hot rows. A second Fourier column sets
per_example's chunk_size (substitutions for that many examples at a time in a
sequential loop; identical results). For reference the last column times the Fourier
rule with per_example only (the term a plain function that recomputes the first
layer), showing what the rank-one update saves.

Cost floor. The rule needs f at n d K = 20 000 substituted latents per step. In (i)
each needs the 200 -> 784 second layer: 20 000 x 156 800 = 3.1 GMAC, against about
0.1 GMAC for Gumbel-softmax's whole forward and backward pass; in (ii) each needs 784
softplus evaluations (15.7 M transcendental pairs) against Gumbel-softmax's three
100 x 200 x 784 matmuls. On a CPU, where time follows arithmetic, the ratio cannot
approach the paper's GPU figures (where the small Gumbel-softmax step is latency-bound).

Per step: jax.jit(jax.value_and_grad(loss)) with respect to all encoder and decoder
parameters, loss = stochbp.expectation(f, Categorical(logits=encoder(X)), key, ...),
float32. Every function is compiled and warmed up, then timed interleaved round-robin
(rotating start) for --repeats rounds; we report medians and the ratio
min(median(fourier, S=1), median(fourier, S=1, chunked)) / median(gumbel_softmax).

    PYTHONPATH=src python benchmarks/discrete.py [--repeats 30] [--seed 0] [--json out.json]
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

import stochbp

N, PIXELS, D, K, HIDDEN = 100, 784, 20, 10, 200
GOAL = 1.2  # median(best fourier, S=1) / median(gumbel_softmax)
PAPER = {"cat_vae": 7.32 / 4.13, "linear": 6.32 / 4.11}  # Table 3, per-epoch, GPU


def softplus(x):
    return 0.5 * (x + jnp.abs(x)) + jnp.log1p(jnp.exp(-jnp.abs(x)))  # exact slope 1/2 at 0


def bernoulli_loglik(logits, x):
    """sum_o log p(x_o | logits_o) = sum_o x_o l_o - softplus(l_o)."""
    return jnp.sum(x * logits - softplus(logits))


def init_params(seed: int, model: str):
    keys = jax.random.split(jax.random.key(seed), 4)
    normal = lambda k, shape, fan_in: jax.random.normal(k, shape) / np.sqrt(fan_in)  # noqa
    params = {"enc_w": normal(keys[0], (PIXELS, D * K), PIXELS),
              "enc_b": jnp.zeros(D * K)}
    if model == "cat_vae":
        params |= {"dec_a": normal(keys[1], (HIDDEN, D, K), D),
                   "dec_b": jnp.zeros(HIDDEN),
                   "out_w": normal(keys[2], (PIXELS, HIDDEN), HIDDEN),
                   "out_b": jnp.zeros(PIXELS)}
    else:
        params |= {"dec_a": normal(keys[1], (PIXELS, D, K), D),
                   "dec_b": jnp.zeros(PIXELS)}
    return params


def make_f(params, X, model: str, rank_one: bool = True, chunk_size=None):
    """f(Z) = sum_i log p(x_i | z_i), declared per example with a linear first layer.

    rank_one=False: the same term as a plain function of one example's z (reference
    row: per-example only, every evaluation recomputes the first layer's matmul).
    chunk_size: stochbp.per_example's (substitutions for that many examples at a time)."""
    if model == "cat_vae":
        def g(u, x):  # u: pre-activation of the hidden layer for one example
            # row-vector times matrix, as in stochbp.experiments.discrete_models (the
            # matrix-times-column form vmaps into a slower layout on XLA:CPU)
            logits = jnp.tanh(u) @ params["out_w"].T + params["out_b"]
            return bernoulli_loglik(logits, x)
    else:
        def g(u, x):  # u: the 784 logits
            return bernoulli_loglik(u, x)
    if rank_one:
        return stochbp.per_example(stochbp.linear(g, params["dec_a"], params["dec_b"]), X,
                                   chunk_size=chunk_size)
    A = params["dec_a"].reshape(params["dec_a"].shape[0], D * K)

    def term(z, x):  # z: class indices of one example, shape (d,)
        return g(A @ jax.nn.one_hot(z, K).reshape(-1) + params["dec_b"], x)
    return stochbp.per_example(term, X)


def make_step(model: str, estimator, X, rank_one: bool = True, chunk_size=None):
    def loss(params, key):
        logits = (X @ params["enc_w"] + params["enc_b"]).reshape(N, D, K)
        return stochbp.expectation(make_f(params, X, model, rank_one, chunk_size),
                                   nd.Categorical(logits=logits), key, estimator=estimator,
                                   num_samples=1)

    return jax.jit(jax.value_and_grad(loss))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30, help="timed rounds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.5,
                   help="Gumbel-softmax temperature (does not affect timing)")
    p.add_argument("--chunk-size", type=int, default=8,
                   help="stochbp.per_example chunk_size for the chunked Fourier column")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.chunk_size < 1:
        p.error("--chunk-size must be >= 1")

    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    X = jnp.asarray(rng.random((N, PIXELS)) < 0.13, jnp.float32)  # MNIST-like sparsity
    estimators = {"fourier": stochbp.fourier(),
                  "gumbel_softmax": stochbp.gumbel_softmax(args.temperature)}
    cases, params = {}, {}
    for model in ("cat_vae", "linear"):
        params[model] = init_params(args.seed, model)
        for name, est in estimators.items():
            cases[(model, name)] = make_step(model, est, X)
        cases[(model, "fourier_plain_term")] = make_step(model, estimators["fourier"], X,
                                                         rank_one=False)
        cases[(model, "fourier_chunked")] = make_step(model, estimators["fourier"], X,
                                                      chunk_size=args.chunk_size)

    print(f"Categorical models, n = {N}, d = {D}, K = {K}, 784 pixels, float32, "
          "jit(value_and_grad) w.r.t. all parameters, S = 1")
    print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} device), "
          f"numpyro {numpyro.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPU cores")

    compile_s, finite = {}, True
    warm = jax.random.key(args.seed + 999)
    for case, fn in cases.items():
        t0 = time.perf_counter()
        value, grads = jax.block_until_ready(fn(params[case[0]], warm))
        compile_s[case] = time.perf_counter() - t0
        for _ in range(2):
            jax.block_until_ready(fn(params[case[0]], warm))
        finite &= bool(np.isfinite(value)) and all(
            bool(np.all(np.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))

    names = list(cases)
    times = {case: [] for case in names}
    keys = jax.random.split(jax.random.key(args.seed), args.repeats)
    for r in range(args.repeats):
        for i in range(len(names)):
            case = names[(r + i) % len(names)]
            t0 = time.perf_counter()
            jax.block_until_ready(cases[case](params[case[0]], keys[r]))
            times[case].append(time.perf_counter() - t0)

    med = {case: float(np.median(times[case]) * 1e3) for case in names}
    iqr = {case: float(np.subtract(*np.percentile(times[case], [75, 25])) * 1e3)
           for case in names}
    print(f"\nTiming: {args.repeats} interleaved rounds; median ms per gradient step "
          "(IQR)\n")
    head = (f"| model | fourier (S=1) ms | fourier, chunk_size={args.chunk_size} ms | "
            f"gumbel_softmax ms | ratio (best fourier / GS) | goal <= {GOAL} | "
            "paper (GPU) | fourier, per_example only (no rank-one) ms |")
    print(head)
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    labels = {"cat_vae": "(i) categorical VAE", "linear": "(ii) one linear layer"}
    for model, label in labels.items():
        fo, gs = med[(model, "fourier")], med[(model, "gumbel_softmax")]
        fc = med[(model, "fourier_chunked")]
        ratio = min(fo, fc) / gs
        results[model] = {"fourier_ms": fo, "gumbel_softmax_ms": gs, "ratio": ratio,
                          "fourier_chunked_ms": fc, "chunk_size": args.chunk_size,
                          "ratio_unchunked": fo / gs, "ratio_chunked": fc / gs,
                          "fourier_iqr_ms": iqr[(model, "fourier")],
                          "gumbel_softmax_iqr_ms": iqr[(model, "gumbel_softmax")],
                          "goal_met": ratio <= GOAL, "paper_ratio": PAPER[model],
                          "fourier_plain_term_ms": med[(model, "fourier_plain_term")],
                          "compile_s": {n: compile_s[(model, n)] for n in
                                        ("fourier", "gumbel_softmax",
                                         "fourier_plain_term", "fourier_chunked")}}
        plain = med[(model, "fourier_plain_term")]
        print(f"| {label} | {fo:.2f} ({iqr[(model, 'fourier')]:.2f}) | "
              f"{fc:.2f} ({iqr[(model, 'fourier_chunked')]:.2f}) | "
              f"{gs:.2f} ({iqr[(model, 'gumbel_softmax')]:.2f}) | {ratio:.2f} | "
              f"{'MET' if ratio <= GOAL else 'NOT MET'} | {PAPER[model]:.2f} | "
              f"{plain:.2f} ({plain / gs:.1f}x gumbel) |")
    print(f"\nall values and gradients finite: {finite}")
    print(f"total runtime {time.perf_counter() - t_start:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": results, "repeats": args.repeats, "seed": args.seed,
                       "versions": {"jax": jax.__version__, "numpyro": numpyro.__version__,
                                    "backend": jax.default_backend(),
                                    "cpu_count": os.cpu_count()}}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())

"""Sigmoid belief networks on binarized MNIST, trained through numpyro's own SVI.

The one- and two-layer linear SBNs of the paper's Appendix B (the same models as
``stochbp.experiments.discrete_models``), written as a numpyro model and guide:

    one layer:  p(z) = Bern(sigmoid(a)),  p(x | z) = Bern(sigmoid(V z + c)),
                q(z | x) = Bern(sigmoid(W x + b));
    two layers: p(z2) = Bern(sigmoid(a)), p(z1 | z2) = Bern(sigmoid(V2 z2 + c2)),
                p(x | z1) = Bern(sigmoid(V1 z1 + c1));
                q(z1 | x) = Bern(sigmoid(W1 x + b1)), q(z2 | z1) = Bern(sigmoid(W2 z1 + b2)).

Each guide site gets its estimator from ``stochbp.infer.ELBO``; the script trains with
fourier, disarm and relax and with numpyro's ``TraceGraph_ELBO`` from the same start and
plots the training ELBO (a running mean of the single-sample estimates) of each against
the step:

    python examples/sbn_mnist.py --steps 2000 --out sbn_mnist.png [--layers 2]
"""
from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd

import stochbp
import stochbp.infer

PIXELS = 784


def _dense(key, n_out, n_in):
    return jax.random.normal(key, (n_out, n_in)) / math.sqrt(n_in), jnp.zeros((n_out,))


def init_params(key, layers: int = 1, latent: int = 200, data_mean=None) -> dict:
    """Weights ~ N(0, 1/fan_in), biases 0, the decoder's output bias at the logits of the
    pixel means (as the experiments initialise them)."""
    k = jax.random.split(key, 4)
    p = {}
    p["enc_w"], p["enc_b"] = _dense(k[0], latent, PIXELS)
    p["dec_w"], p["dec_b"] = _dense(k[1], PIXELS, latent)
    if data_mean is not None:
        m = jnp.clip(jnp.asarray(data_mean, p["dec_b"].dtype), 1e-3, 1 - 1e-3)
        p["dec_b"] = jnp.log(m) - jnp.log1p(-m)
    p["prior"] = jnp.zeros((latent,))
    if layers == 2:
        p["enc2_w"], p["enc2_b"] = _dense(k[2], latent, latent)
        p["dec2_w"], p["dec2_b"] = _dense(k[3], latent, latent)
    return p


def from_experiment(params: dict, layers: int = 1) -> dict:
    """The experiments' parameter tree (``discrete_models.init_params``) under our names."""
    p = {"enc_w": params["enc"][0]["w"], "enc_b": params["enc"][0]["b"],
         "dec_w": params["dec_in"]["w"], "dec_b": params["dec_in"]["b"],
         "prior": params["prior"]}
    if layers == 2:
        p.update(enc2_w=params["enc2"]["w"], enc2_b=params["enc2"]["b"],
                 dec2_w=params["dec2"]["w"], dec2_b=params["dec2"]["b"])
    return p


def make_sbn(init: dict, layers: int = 1):
    """(model, guide) of the SBN; ``init`` gives the initial value of every param site."""
    def param(name):
        return numpyro.param(name, init[name])

    def model(x):
        with numpyro.plate("data", x.shape[0]):
            top = numpyro.sample("z2" if layers == 2 else "z",
                                 nd.Bernoulli(logits=param("prior")).to_event(1))
            z = top
            if layers == 2:
                z = numpyro.sample("z", nd.Bernoulli(
                    logits=top @ param("dec2_w").T + param("dec2_b")).to_event(1))
            numpyro.sample("x", nd.Bernoulli(logits=z @ param("dec_w").T + param("dec_b"))
                           .to_event(1), obs=x)

    def guide(x):
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", nd.Bernoulli(
                logits=x @ param("enc_w").T + param("enc_b")).to_event(1))
            if layers == 2:
                numpyro.sample("z2", nd.Bernoulli(
                    logits=z @ param("enc2_w").T + param("enc2_b")).to_event(1))

    return model, guide


def load_mnist(data_dir: str | None = None, n: int | None = None) -> np.ndarray:
    from stochbp.experiments import datasets
    train = datasets.load("mnist", data_dir, download=False)["train"]
    return np.asarray(train[:n] if n else train, np.float32)


def train_curves(losses: dict, steps: int, data: np.ndarray, layers: int = 1,
                 latent: int = 200, batch: int = 100, lr: float = 1e-3, seed: int = 0):
    """{name: per-step -loss (ELBO estimates), seconds} for each loss in ``losses``,
    minibatches drawn by a fixed schedule shared by every loss."""
    import optax

    init = init_params(jax.random.key(seed), layers, latent, data.mean(0))
    model, guide = make_sbn(init, layers)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, data.shape[0], size=(steps, batch))
    batches = jnp.asarray(data[idx])
    out = {}
    for name, loss in losses.items():
        svi = numpyro.infer.SVI(model, guide, optax.adam(lr), loss=loss)
        state = loss.init(svi, jax.random.key(seed), batches[0]) \
            if isinstance(loss, stochbp.infer.ELBO) else svi.init(jax.random.key(seed),
                                                                    batches[0])

        @jax.jit
        def run(state, xs):
            def body(s, x):
                s, value = svi.update(s, x)
                return s, value
            return jax.lax.scan(body, state, xs)

        t0 = time.perf_counter()
        state, values = run(state, batches)
        values = np.asarray(values)
        out[name] = (-values / batch, time.perf_counter() - t0)
    return out


def estimators(layers: int, names=("fourier", "disarm", "relax")) -> dict:
    import optax
    make = {"fourier": stochbp.fourier, "disarm": stochbp.disarm, "relax": stochbp.relax}
    out = {}
    for name in names:
        est = make[name]()
        sites = {"z": est}
        if layers == 2:
            # relax needs a learning signal continuous in z, but z2 is re-drawn from
            # q(z2 | z): give z the fourier rule and z2 the estimator under comparison
            sites = {"z": est if name != "relax" else stochbp.fourier(), "z2": est}
        opt = optax.adam(1e-3) if name == "relax" else None
        out[name] = stochbp.infer.ELBO(estimators=sites, control_optimizer=opt)
    out["TraceGraph_ELBO"] = numpyro.infer.TraceGraph_ELBO()
    return out


def plot(curves: dict, path: str, title: str, window: int = 50) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (values, seconds) in curves.items():
        w = min(window, len(values))
        smooth = np.convolve(values, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(w, len(values) + 1), smooth, label=f"{name} ({seconds:.0f} s)")
    ax.set_xlabel("step (batch of 100)")
    ax.set_ylabel(f"training ELBO per image (running mean of {window})")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=1, choices=(1, 2))
    ap.add_argument("--latent", type=int, default=200)
    ap.add_argument("--train-size", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--estimators", default="fourier,disarm,relax")
    ap.add_argument("--out", default="sbn_mnist.png")
    a = ap.parse_args(argv)
    data = load_mnist(a.data_dir, a.train_size)
    losses = estimators(a.layers, tuple(a.estimators.split(",")))
    curves = train_curves(losses, a.steps, data, a.layers, a.latent)
    plot(curves, a.out, f"{a.layers}-layer SBN, binarized MNIST, numpyro SVI")
    for name, (values, seconds) in curves.items():
        print(f"{name:>16}: final ELBO (mean of last 10%) "
              f"{values[-max(1, len(values) // 10):].mean():9.2f}   {seconds:6.1f} s")
    return curves


if __name__ == "__main__":
    main()

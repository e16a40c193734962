"""stochbp.infer.ELBO on the paper's sigmoid belief nets: step time and gradient variance.

Side by side in one run, on the one- and two-layer linear SBN (batch 100, 200 latent bits
per layer, binarized MNIST, parameters at the experiments' initialisation):

* step time of ``numpyro.infer.SVI.update`` with ``stochbp.infer.ELBO(fourier)`` divided
  by the step time of the hand-written experiment step (``discrete_models.surrogate_elbo``
  with ``stochbp.fourier()``, its gradient and an Adam update), both jitted, medians of
  interleaved repeats (goal <= 1.5);
* per-parameter variance of the gradient (over ``--draws`` keys, fixed batch and
  parameters) of numpyro's ``TraceGraph_ELBO`` divided by that of
  ``stochbp.infer.ELBO`` with fourier, disarm and relax (goal >= 10), reported as the
  median over parameters and the ratio of the summed variances, for the encoder
  (the parameters of q, where the estimators differ) and for all parameters; beside it
  the step-time ratio against TraceGraph_ELBO.

    python benchmarks/infer.py [--repeats 7] [--draws 200] [--layers 1,2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax

import stochbp
import stochbp.infer
from stochbp.experiments import discrete_models as dm

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import sbn_mnist  # noqa: E402


def _block(tree):
    jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - t0)
    return times


def setup(layers, latent, batch, data_dir):
    data = sbn_mnist.load_mnist(data_dir)
    x = jnp.asarray(data[:batch])
    spec = dm.ModelSpec("sbn", layers, latent=latent)
    exp_params = dm.init_params(spec, jax.random.key(0), data_mean=data.mean(0))
    params = sbn_mnist.from_experiment(exp_params, layers)
    model, guide = sbn_mnist.make_sbn(params, layers)
    return x, spec, exp_params, params, model, guide


def elbos(layers):
    import optax as _optax
    sites = lambda est, top=None: {"z": est} if layers == 1 else \
        {"z": top or est, "z2": est}  # noqa: E731
    return {
        "fourier": stochbp.infer.ELBO(estimators=sites(stochbp.fourier())),
        "disarm": stochbp.infer.ELBO(estimators=sites(stochbp.disarm())),
        # relax needs a signal continuous in z; with two layers z2 is re-drawn from
        # q(z2 | z), so the top layer keeps fourier there
        "relax": stochbp.infer.ELBO(estimators=sites(stochbp.relax(), stochbp.fourier()),
                                    control_optimizer=_optax.adam(1e-3)),
        "TraceGraph_ELBO": numpyro.infer.TraceGraph_ELBO(),
    }


def step_times(layers, latent, batch, repeats, data_dir):
    x, spec, exp_params, params, model, guide = setup(layers, latent, batch, data_dir)
    # hand-written experiment step
    opt = optax.adam(1e-4)
    inner = None if layers == 1 else dm.Inner(stochbp.fourier(), nested=False)

    @jax.jit
    def hand_step(p, s, key):
        g = jax.grad(lambda q: -dm.surrogate_elbo(spec, q, x, key, estimator=stochbp.fourier(),
                                                  inner=inner)[0])(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    hstate = (exp_params, opt.init(exp_params))
    fns = {"hand-written": lambda: hand_step(*hstate, jax.random.key(1))}
    for name, loss in elbos(layers).items():
        if name in ("disarm", "relax"):
            continue
        svi = numpyro.infer.SVI(model, guide, numpyro.optim.Adam(1e-4), loss=loss)
        st = loss.init(svi, jax.random.key(0), x) if isinstance(loss, stochbp.infer.ELBO) \
            else svi.init(jax.random.key(0), x)
        upd = jax.jit(svi.update)
        fns[name] = (lambda upd=upd, st=st: upd(st, x))
    compile_s = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        _block(fn())
        compile_s[name] = time.perf_counter() - t0
    times = {name: [] for name in fns}
    for _ in range(repeats):  # interleaved
        for name, fn in fns.items():
            times[name] += _median_time(fn, 1)
    return {name: float(np.median(t)) for name, t in times.items()}, compile_s


def variances(layers, latent, batch, draws, data_dir):
    x, spec, exp_params, params, model, guide = setup(layers, latent, batch, data_dir)
    out = {}
    for name, loss in elbos(layers).items():
        extra = {}
        if isinstance(loss, stochbp.infer.ELBO):
            states = loss.initial_states(jax.random.key(0), params, model, guide, x)
            if jax.tree_util.tree_leaves(states):
                extra = {stochbp.infer.STATE_KEY: states}

        def grad(k, loss=loss, extra=extra):
            return jax.grad(lambda p: loss.loss(k, {**p, **extra}, model, guide, x))(params)
        keys = jax.random.split(jax.random.key(3), draws)
        g = jax.jit(jax.vmap(grad))(keys[:1])  # compile
        t0 = time.perf_counter()
        g = jax.lax.map(jax.jit(grad), keys, batch_size=10)
        _block(g)
        out[name] = ({k: np.asarray(v).reshape(draws, -1).var(0) for k, v in g.items()},
                     time.perf_counter() - t0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--layers", default="1,2")
    ap.add_argument("--latent", type=int, default=200)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args(argv)
    print(f"load: {os.getloadavg()}  devices: {jax.devices()}")
    for layers in [int(v) for v in a.layers.split(",")]:
        print(f"\n## {layers}-layer SBN, batch {a.batch}, {a.latent} latent bits per layer")
        med, comp = step_times(layers, a.latent, a.batch, a.repeats, a.data_dir)
        print("\n| step | median s | compile s |\n|---|---|---|")
        for name in med:
            print(f"| {name} | {med[name]:.4f} | {comp[name]:.1f} |")
        print(f"\nstochbp.infer fourier / hand-written: "
              f"{med['fourier'] / med['hand-written']:.2f} (goal <= 1.5)")
        var = variances(layers, a.latent, a.batch, a.draws, a.data_dir)
        tg = var["TraceGraph_ELBO"][0]
        enc = [k for k in tg if k.startswith("enc")]
        print(f"\n| estimator | TraceGraph var / var: median over encoder params | "
              f"ratio of summed encoder var | median over all params | "
              f"ratio of summed var (all) | s per {a.draws} gradients |\n|---|---|---|---|---|---|")
        for name, (v, secs) in var.items():
            def ratios(keys):
                a_ = np.concatenate([tg[k] for k in keys])
                b_ = np.concatenate([v[k] for k in keys])
                ok = b_ > 0
                med_r = np.median(a_[ok] / b_[ok]) if ok.any() else float("inf")
                return med_r, a_.sum() / max(b_.sum(), 1e-300)
            m1, s1 = ratios(enc)
            m2, s2 = ratios(list(tg))
            print(f"| {name} | {m1:.3g} | {s1:.3g} | {m2:.3g} | {s2:.3g} | {secs:.1f} |")


if __name__ == "__main__":
    main()

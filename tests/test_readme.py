"""The README's usage example runs as written, prints the estimate beside the exact
gradient, and what it says about that gradient holds."""
import contextlib
import io
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def usage_example() -> str:
    text = README.read_text()
    section = text[text.index("\n## Usage\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_usage_example_prints_estimates_beside_the_exact_gradient():
    namespace = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(usage_example(), "README.md (Usage)", "exec"), namespace)
    lines = printed.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["E", "dE/dk", "dE/dmu"]
    assert all(" exact " in line for line in lines)
    # the numbers the text quotes: d/dk = 2 mu (k mu - 0.49) + mu^2 = 2.02 and
    # d/dmu = 2 k (k mu - 0.49) + 2 k mu = 3.02 at k = mu = 1
    np.testing.assert_allclose(namespace["exact_dk"], 2.02, rtol=1e-6)
    np.testing.assert_allclose(namespace["exact_dmu"], 3.02, rtol=1e-6)
    # "exact at order 2" = unbiased, not noiseless: single keys differ, their mean
    # over many keys is the exact gradient within 4 standard errors
    loss, k, mu = namespace["loss"], namespace["k"], namespace["mu"]
    draws = jax.jit(jax.vmap(lambda key: jnp.stack(jax.grad(loss, argnums=(0, 1))(
        k, mu, key))))(jax.random.split(jax.random.key(1), 2000))
    assert float(jnp.std(draws[:, 0, 0])) > 0.1  # noisy
    mean = np.asarray(draws.mean(0))
    se = np.asarray(draws.std(0, ddof=1)) / np.sqrt(draws.shape[0])
    exact = np.stack([namespace["exact_dk"], namespace["exact_dmu"]])
    assert np.all(np.abs(mean - exact) < 4 * se), (mean, se)

import jax
import pytest

# Float64 so that exact rules can be compared with equality up to rounding; the float32
# path is tested explicitly in test_transforms.py.
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.PRNGKey(20201205)

import jax
import pytest

# Float64 so that exact rules can be compared with equality up to rounding; the float32
# path is tested explicitly in test_transforms.py.
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.PRNGKey(20201205)


@pytest.fixture(autouse=True, scope="module")
def _release_jax_caches_between_modules():
    """JAX keeps what it traced and compiled for the whole process (about 20 MB per
    statistical test here), so one pytest run of every module grew to several GB.
    Clearing once a module is done keeps the peak at that of the largest module; tests
    within a module still share their compiled functions (clearing after every test
    made test_unbiased 5x slower)."""
    yield
    jax.clear_caches()

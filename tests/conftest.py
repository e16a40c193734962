import atexit
import ctypes
import ctypes.util
import gc
import importlib.metadata
import os
import shutil
import tempfile

# The suite's programs are tiny, so XLA's compile time, not their run time, is what the
# tests wait for; JAX's own switch for that case skips most of the backend's optimisation
# passes (a quarter less CPU for this suite, same results). Set before JAX starts so the
# CLI subprocesses inherit it; JAX_DISABLE_MOST_OPTIMIZATIONS=0 tests the optimised build.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

# Two XLA CPU settings for these small programs, with the same results: its older loop
# emitter instead of the newer "fusion emitters", and each program compiled as one LLVM
# module instead of split into parts for parallel compilation (two workers keep both
# cores busy anyway). test_unbiased alone: 113-122 -> 64-66 CPU s, 0.68 -> 0.60 GB.
# Set before JAX starts, inherited by the subprocesses; only for the jaxlib versions
# pyproject allows (an XLA that does not know a flag aborts); an option XLA_FLAGS names
# already is kept as it is (--xla_cpu_use_fusion_emitters=true tests the default).
_XLA_TEST_FLAGS = {"xla_cpu_use_fusion_emitters": "false",
                   "xla_cpu_parallel_codegen_split_count": "1"}
if importlib.metadata.version("jaxlib").startswith("0.10."):
    _flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = " ".join(
        [_flags] * bool(_flags) + [f"--{k}={v}" for k, v in _XLA_TEST_FLAGS.items()
                                   if k not in _flags])

# One on-disk compilation cache for the run, shared by the pytest-xdist workers and the
# CLI subprocesses (which inherit the environment) and surviving jax.clear_caches()
# below: a program compiled once (a training step the kill/resume test compiles in two
# processes, a sampler used eagerly by several modules) is read back instead of
# recompiled. Removed at exit; a cache directory the user set is used as it is.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="stochbp-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    atexit.register(shutil.rmtree, _XLA_CACHE, True)

import jax  # noqa: E402
import pytest  # noqa: E402

# Float64 so that exact rules can be compared with equality up to rounding; the float32
# path is tested explicitly in test_transforms.py.
jax.config.update("jax_enable_x64", True)

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)


# pytest-xdist's loadscope hands whole modules to the workers, the next one to whichever
# worker is about to run out of tests. Its default order (most tests first) is replaced
# by this one, most CPU first, so that the two workers end together on small modules;
# test_devices leads, so its 4-device subprocess (0.5-0.7 GB) runs beside workers that
# are still small instead of beside the largest modules. Modules not named here follow
# in collection order.
FIRST = ("test_devices.py", "test_infer.py", "test_cli.py", "test_unbiased.py",
         "test_discrete_experiments.py", "test_mixture.py", "test_discrete.py",
         "test_transforms.py", "test_measure_valued.py", "test_silent.py",
         "test_taylor.py", "test_implicit.py", "test_extension.py")


def pytest_configure(config):
    if "--loadscope-reorder" not in config.invocation_params.args and \
            hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable


@pytest.fixture
def key():
    return jax.random.PRNGKey(20201205)


def _release_jax_caches():
    jax.clear_caches()
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)  # the C allocator keeps what was freed unless asked to give it back


# JAX keeps what it traced and compiled for the whole process (about 20 MB per
# statistical test here), so one worker running a large module grew past 2.5 GB. The
# caches are released after every module and every CLEAR_EVERY tests within one; tests
# that share a compiled function still share it between releases, and after a release
# the on-disk cache above serves what must be compiled again.
CLEAR_EVERY = 8
_since_release = [0]


@pytest.fixture(autouse=True)
def _bound_jax_caches_within_modules(request):
    yield
    _since_release[0] += 1
    # a module whose tests each leave much behind (op-by-op runs) sets RELEASE_EVERY
    if _since_release[0] >= getattr(request.module, "RELEASE_EVERY", CLEAR_EVERY):
        _since_release[0] = 0
        _release_jax_caches()


@pytest.fixture(autouse=True, scope="module")
def _release_jax_caches_between_modules():
    yield
    _since_release[0] = 0
    _release_jax_caches()

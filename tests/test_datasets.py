"""Dataset loaders: local copies, environment variable, downloads (faked), errors."""
import io
import zipfile

import numpy as np
import pytest

from stochbp.experiments import datasets


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)


def write_mnist(folder, n=5):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {s: rng.integers(0, 2, (n, 784), dtype=np.uint8) for s in ("train", "valid", "test")}
    np.savez(folder / "binarized_mnist.npz", **arrays)
    return arrays


def test_local_copy_and_env_var(tmp_path, monkeypatch):
    arrays = write_mnist(tmp_path / "d")
    data = datasets.load("mnist", data_dir=str(tmp_path / "d"))
    np.testing.assert_array_equal(data["train"], arrays["train"])
    assert data["train"].dtype == np.float32
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "d"))
    assert datasets.load("mnist")["test"].shape == (5, 784)


def test_missing_data_message_says_where_and_how(tmp_path):
    with pytest.raises(datasets.DataNotFound) as err:
        datasets.load("omniglot", data_dir=str(tmp_path), download=False)
    msg = str(err.value)
    assert str(tmp_path) in msg and "--data-dir" in msg and datasets.ENV_VAR in msg


def test_download_mnist_into_cache(monkeypatch):
    rng = np.random.default_rng(1)
    rows = {s: rng.integers(0, 2, (3, 784)) for s in ("train", "valid", "test")}

    def fake_fetch(url):
        split = url.rsplit("_", 1)[1].split(".")[0]
        return "\n".join(" ".join(str(v) for v in r) for r in rows[split]).encode()
    monkeypatch.setattr(datasets, "_fetch", fake_fetch)
    data = datasets.load("mnist")
    np.testing.assert_array_equal(data["valid"], rows["valid"])
    assert (datasets.cache_dir() / "binarized_mnist.npz").exists()
    monkeypatch.setattr(datasets, "_fetch", lambda url: 1 / 0)  # now served from the cache
    np.testing.assert_array_equal(datasets.load("mnist")["train"], rows["train"])


def test_download_failure_is_reported(monkeypatch):
    def offline(url):
        raise OSError("network unreachable")
    monkeypatch.setattr(datasets, "_fetch", offline)
    with pytest.raises(datasets.DataNotFound, match="network unreachable"):
        datasets.load("mnist")


def _omniglot_zip(chars=2, drawers=(1, 16)):
    from PIL import Image
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c in range(chars):
            for d in drawers:
                img = np.full((105, 105), 255, np.uint8)
                img[10 * c:10 * c + 40, :] = 0  # black ink stripe
                png = io.BytesIO()
                Image.fromarray(img).save(png, format="PNG")
                zf.writestr(f"images_background/Alpha/character{c + 1:02d}/"
                            f"{c + 1:04d}_{d:02d}.png", png.getvalue())
    return buf.getvalue()


def test_omniglot_conversion_from_original_zips():
    arrays = datasets.omniglot_arrays([_omniglot_zip()])
    assert arrays["train"].shape == (2, 784) and arrays["test"].shape == (2, 784)
    assert set(arrays["train_drawer"]) == {0} and set(arrays["test_drawer"]) == {15}
    img = arrays["train"][0].reshape(28, 28)
    assert img[0, 0] == 255 and img[-1, 0] == 0  # ink is 255 after inversion


def test_bad_images_are_rejected(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    np.savez(folder / "binarized_mnist.npz", train=np.full((2, 784), 7, np.uint8),
             test=np.zeros((2, 784), np.uint8))
    with pytest.raises(ValueError, match="binary"):
        datasets.load("mnist", data_dir=str(folder))
    with pytest.raises(ValueError, match="784"):
        datasets.check_images("x", np.zeros((3, 100)), binary=False)
    with pytest.raises(ValueError, match="dataset"):
        datasets.load("cifar")


def test_shared_copies_load_when_present():
    import os
    shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
    if not os.path.exists(os.path.join(shared, "binarized_mnist.npz")):
        pytest.skip("shared data folder not beside this checkout")
    m = datasets.load("mnist", data_dir=shared, download=False)
    assert m["train"].shape == (50000, 784) and set(np.unique(m["train"])) == {0.0, 1.0}
    o = datasets.load("omniglot", data_dir=shared, download=False)
    assert o["train"].shape == (24345, 784) and 0.0 <= o["train"].min() <= o["train"].max() <= 1.0

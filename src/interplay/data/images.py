"""Image data sets (Fashion-MNIST, CIFAR-10, scikit-learn's digits): download, decode, verify, prepare.

Stages, as for UCI data (DESIGN.md, "Image data"): `download_images` fetches each original file of the data
set (its canonical URL, or a mirror: ``<dataset>/<file>`` or ``<file>`` below it) with pooch through
`interplay.data.download`, and checks each file's md5 against the checksum its publisher gives (the ones
torchvision pins). `make_image_arrays` decodes the files (IDX gzip, the CIFAR python pickles, digits' CSV)
into ``images`` (row, height, width, channel) uint8 and ``labels`` (row,) in the canonical order (training
files, then test files), checks the decoded arrays' sha256 where one is pinned, and writes them to
``results/data/images/{dataset}.nc``. `prepare_image_split` shuffles the rows that are not the canonical
test set with the data seed, standardises per channel, splits with the authors' fractions and writes the
prepared file in the tabular layout: ``x`` (row, feature) holds the images flattened row-major (height,
width, channel), attrs ``image_shape``.

scikit-learn's digits (8 x 8, one channel, 1,797 images) ship with scikit-learn: their canonical source is
the installed package's ``datasets/data/digits.csv.gz``, fetched through the same code (a file:// URL), so
the tests run the image path end to end without a network.

Nothing here imports JAX (the config reads `IMAGE_DATASETS` when the workflow is parsed).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import pickle
import shutil
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from interplay.data.atomic import atomic_path, make_temp_dir
from interplay.data.convert import sha256_file
from interplay.data.errors import ChecksumError, DataError, MalformedFile, SourceMissing, UnknownDataset

log = logging.getLogger(__name__)

FASHION_MNIST_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
IMAGE_SPLITS = ("shuffle",)


@dataclass(frozen=True)
class ImageFile:
    """One original file: its name in the download directory, canonical URL (None: computed, see
    `canonical_url`) and the md5 its publisher gives."""

    name: str
    url: str | None
    md5: str


@dataclass(frozen=True)
class ImageSource:
    """One image data set: files, decoded shape, classes, the canonical test set and the authors' split.

    `n_test`: the canonical test images, the last rows of the decoded arrays (None: no canonical test set;
    every row is shuffled). `fractions`: train, valid, test of all rows (`interplay.data.prepare.split_sizes`;
    the test fraction must give exactly `n_test` rows). `arrays_sha256`: the sha256 of the decoded arrays
    (`arrays_sha256`), None where it could not be computed yet (the file md5s still pin the content).
    """

    name: str
    files: tuple[ImageFile, ...]
    image_shape: tuple[int, int, int]
    n_classes: int
    n_rows: int
    n_test: int | None
    fractions: tuple[float, float, float]
    decoder: str
    arrays_sha256: str | None
    task: str = "classification"

    @property
    def n_features(self) -> int:
        return int(np.prod(self.image_shape))


def _sklearn_digits_url() -> str:
    """file:// URL of the digits file of the installed scikit-learn (found without importing it)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissing("digits: scikit-learn is not installed; its digits file is the data set's source")
    return (Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz").as_uri()


IMAGE_DATASETS: dict[str, ImageSource] = {
    source.name: source
    for source in (
        ImageSource(
            name="fashion_mnist",
            files=tuple(ImageFile(name, f"{FASHION_MNIST_URL}/{name}", md5) for name, md5 in (
                ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
            )),
            image_shape=(28, 28, 1), n_classes=10, n_rows=70000, n_test=10000,
            fractions=(0.7, 0.15715, 0.14285),  # the authors' cnn_classif_sghmc.yaml: 49,000 / 11,000 / 10,000
            decoder="idx", arrays_sha256=None,
        ),
        ImageSource(
            name="cifar10",
            files=(ImageFile("cifar-10-python.tar.gz", CIFAR10_URL, "c58f30108f718f92721af3b95e74349a"),),
            image_shape=(32, 32, 3), n_classes=10, n_rows=60000, n_test=10000,
            fractions=(0.75, 0.08334, 0.16666),  # the authors' cifar10 configs: 45,000 / 5,000 / 10,000
            decoder="cifar_python", arrays_sha256=None,
        ),
        ImageSource(
            name="digits",
            files=(ImageFile("digits.csv.gz", None, "9b335364a7bfd63947c7480a5bd51f2d"),),
            image_shape=(8, 8, 1), n_classes=10, n_rows=1797, n_test=None,
            fractions=(0.7, 0.1, 0.2),
            decoder="digits_csv",
            arrays_sha256="65e5b4619795efb40c1082f4c350c049e4ad552200d369b6ae99e21eef5e72c5",
        ),
    )
}


def get_image_source(dataset: str) -> ImageSource:
    try:
        return IMAGE_DATASETS[dataset]
    except KeyError:
        raise UnknownDataset(f"unknown image data set {dataset!r}; known: {sorted(IMAGE_DATASETS)}") from None


def canonical_url(source: ImageSource, file: ImageFile) -> str:
    return file.url if file.url is not None else _sklearn_digits_url()


# ----------------------------------------------------------------------------- download


def md5_file(path: str | Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_md5(source: ImageSource, file: ImageFile, path: Path, origin: str) -> None:
    actual = md5_file(path)
    if actual != file.md5:
        raise ChecksumError(f"{source.name}: {file.name} from {origin} has md5 {actual}, expected the "
                            f"published {file.md5}; the file is corrupted or not the original")


def _fetch_file(source: ImageSource, file: ImageFile, staging: Path, mirror: str | None, *,
                timeout: float, retries: int) -> Path:
    """One file into `staging`: from the mirror (``<dataset>/<file>``, then ``<file>``), else its canonical
    URL; without a mirror, or where the mirror lacks it and the canonical source is a local file (digits),
    from the canonical URL."""
    from urllib.parse import urlparse

    from interplay.data.download import MIRROR_HINT, _fetch, _is_http, _local_path

    canonical = canonical_url(source, file)
    tried = []
    if mirror:
        if _is_http(mirror):
            base_url = mirror
        else:
            root = _local_path(mirror)
            if not root.is_dir():
                raise DataError(f"{source.name}: mirror directory {root} does not exist")
            base_url = root.resolve().as_uri()
        for relative in (f"{source.name}/{file.name}", file.name):
            tried.append(f"{base_url.rstrip('/')}/{relative}")
            fetched = _fetch(source.name, base_url, relative, staging, retries=retries, timeout=timeout,
                             hint=f"Check the mirror {mirror!r}")
            if fetched is not None:
                return fetched
        if urlparse(canonical).scheme != "file":
            raise SourceMissing(f"{source.name}: the mirror holds none of {tried}")
    base, _, name = canonical.rpartition("/")
    fetched = _fetch(source.name, base, name, staging, url=canonical, retries=retries, timeout=timeout,
                     hint=MIRROR_HINT)
    if fetched is None:
        raise SourceMissing(f"{source.name}: {canonical} does not exist (tried also {tried}). {MIRROR_HINT}")
    return fetched


def download_images(dataset: str, out_dir: str | Path, mirror: str | None = None, *, timeout: float = 60,
                    retries: int = 3) -> list[Path]:
    """Fetch every file of `dataset` into `out_dir` (which then holds exactly those files), each checked
    against its published md5; a failed check leaves nothing behind."""
    source = get_image_source(dataset)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(out_dir)
    try:
        for file in source.files:
            fetched = _fetch_file(source, file, staging, mirror, timeout=timeout, retries=retries)
            check_md5(source, file, fetched, str(fetched))
            if fetched != staging / file.name:
                fetched.rename(staging / file.name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        for leftover in staging.iterdir():  # pooch's bookkeeping, if any
            if leftover.name not in {f.name for f in source.files}:
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: downloaded %s", dataset, [f.name for f in source.files])
    return [out_dir / f.name for f in source.files]


# ----------------------------------------------------------------------------- decoding


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip): magic 0x0000 0x08 (unsigned byte) <ndim>, big-endian dims, then the data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise MalformedFile(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise MalformedFile(f"{path}: {body.size} bytes of data for dims {dims}")
    return body.reshape(dims)


def decode_idx(files: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    train_x, train_y, test_x, test_y = (read_idx(p) for p in files)
    images = np.concatenate([train_x, test_x])[..., None]
    return images, np.concatenate([train_y, test_y]).astype(np.int64)


def decode_cifar_python(files: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-python.tar.gz: data_batch_1..5 then test_batch, each (10000, 3072) uint8 in (channel, height,
    width) order, with their labels."""
    names = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"]
    images, labels = [], []
    try:
        with tarfile.open(files[0], "r:gz") as archive:
            for name in names:
                member = archive.extractfile(name)
                if member is None:
                    raise MalformedFile(f"{files[0]}: {name} is not a file")
                batch = pickle.load(member, encoding="bytes")  # the md5-verified original file
                images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                labels.append(np.asarray(batch[b"labels"], np.int64))
    except (tarfile.TarError, KeyError, EOFError) as error:
        raise MalformedFile(f"{files[0]}: not the CIFAR-10 python archive: {error}") from None
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def decode_digits_csv(files: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits.csv.gz: 64 pixel values (0..16) and the label per line."""
    table = np.loadtxt(files[0], delimiter=",", ndmin=2)
    if table.shape[1] != 65 or not np.all(table == np.round(table)):
        raise MalformedFile(f"{files[0]}: expected 65 integer columns, got shape {table.shape}")
    return table[:, :64].astype(np.uint8).reshape(-1, 8, 8, 1), table[:, 64].astype(np.int64)


DECODERS: dict[str, Callable[[Sequence[Path]], tuple[np.ndarray, np.ndarray]]] = {
    "idx": decode_idx,
    "cifar_python": decode_cifar_python,
    "digits_csv": decode_digits_csv,
}


def arrays_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the decoded arrays: the images' uint8 bytes (row, height, width, channel; C order), then the
    labels as little-endian int64."""
    digest = hashlib.sha256(np.ascontiguousarray(images, np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, "<i8").tobytes())
    return digest.hexdigest()


def decode_images(dataset: str, download_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The decoded (images, labels) of a download, shape- and hash-checked (where a hash is pinned)."""
    source = get_image_source(dataset)
    download_dir = Path(download_dir)
    paths = [download_dir / f.name for f in source.files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{dataset}: {download_dir} lacks {missing}; run the download first")
    for file, path in zip(source.files, paths):
        check_md5(source, file, path, str(path))
    images, labels = DECODERS[source.decoder](paths)
    expected = (source.n_rows, *source.image_shape)
    if images.shape != expected or labels.shape != (source.n_rows,):
        raise MalformedFile(f"{dataset}: decoded images {images.shape} and labels {labels.shape}, expected "
                            f"{expected} and ({source.n_rows},)")
    if labels.min() < 0 or labels.max() >= source.n_classes:
        raise MalformedFile(f"{dataset}: labels outside 0..{source.n_classes - 1}")
    digest = arrays_sha256(images, labels)
    if source.arrays_sha256 is None:
        log.warning("%s: decoded arrays have sha256 %s; no decoded-array hash is pinned for this data set yet "
                    "(its files' published md5s were checked)", dataset, digest)
    elif digest != source.arrays_sha256:
        raise ChecksumError(f"{dataset}: decoded arrays have sha256 {digest}, expected the pinned "
                            f"{source.arrays_sha256}")
    return images, labels


def make_image_arrays(dataset: str, download_dir: str | Path, out_path: str | Path) -> Path:
    """Decode and verify the download of `dataset`; write ``images`` and ``labels`` (NetCDF) atomically."""
    source = get_image_source(dataset)
    images, labels = decode_images(dataset, download_dir)
    ds = xr.Dataset(
        {"images": (("row", "height", "width", "channel"), images), "labels": ("row", labels)},
        attrs={"dataset": dataset, "arrays_sha256": arrays_sha256(images, labels),
               "n_test": -1 if source.n_test is None else source.n_test,
               "files_md5": ", ".join(f"{f.name}: {f.md5}" for f in source.files)},
    )
    encoding = {"images": {"zlib": True, "complevel": 4}}
    with atomic_path(out_path) as temp:
        ds.to_netcdf(temp, engine="netcdf4", encoding=encoding)
    log.info("%s: wrote %s (%d images %s)", dataset, out_path, images.shape[0], images.shape[1:])
    return Path(out_path)


# ----------------------------------------------------------------------------- prepared split


def image_split_sizes(source: ImageSource) -> tuple[int, int, int]:
    """Train, valid, test rows by the authors' fractions; the test rows are the canonical test set."""
    from interplay.data.prepare import split_sizes

    sizes = split_sizes(source.n_rows, source.fractions)
    if source.n_test is not None and sizes[2] != source.n_test:
        raise DataError(f"{source.name}: fractions {source.fractions} give {sizes[2]} test rows, but the "
                        f"canonical test set has {source.n_test}")
    return sizes


def image_row_order(source: ImageSource, seed: int) -> np.ndarray:
    """Rows of the prepared file: the non-test rows shuffled by default_rng(seed), then the canonical test
    set in its own order (every row shuffled where there is none)."""
    n_test = source.n_test or 0
    shuffled = np.random.default_rng(int(seed)).permutation(source.n_rows - n_test)
    return np.concatenate([shuffled, np.arange(source.n_rows - n_test, source.n_rows)]).astype(np.int64)


def channel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std over rows and pixels (std 1 for a constant channel), float64."""
    values = images.reshape(-1, images.shape[-1]).astype(np.float64)
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def prepare_image_split(arrays_path: str | Path, out_path: str | Path, *, dataset: str, seed: int,
                        standardise: str = "full", split: str = "shuffle") -> Path:
    """Order the rows (`image_row_order`), standardise per channel (statistics of all rows, "full", or of
    the train split, "train"), split with the authors' fractions; write the prepared file (DESIGN.md)."""
    from interplay.data.prepare import SPLITS, STANDARDISE

    source = get_image_source(dataset)
    if standardise not in STANDARDISE:
        raise ValueError(f"standardise must be one of {STANDARDISE}, got {standardise!r}")
    if split not in IMAGE_SPLITS:
        raise ValueError(f"{dataset}: data.split must be one of {IMAGE_SPLITS} for image data, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    with xr.open_dataset(arrays_path) as ds:
        images = np.asarray(ds["images"].values, np.uint8)
        labels = np.asarray(ds["labels"].values, np.int64)
        digest = str(ds.attrs["arrays_sha256"])
    if digest != arrays_sha256(images, labels):
        raise ChecksumError(f"{arrays_path}: its arrays do not have the sha256 {digest} it records")
    sizes = image_split_sizes(source)
    order = image_row_order(source, seed)
    images, labels = images[order], labels[order]
    fit_rows = slice(None) if standardise == "full" else slice(0, sizes[0])
    mean, std = channel_statistics(images[fit_rows])
    x = ((images.astype(np.float64) - mean) / std).astype(np.float32).reshape(len(order), -1)
    height, width, channels = source.image_shape
    features = [f"h{h}_w{w}_c{c}" for h in range(height) for w in range(width) for c in range(channels)]
    per_feature = np.tile(np.arange(channels), height * width)
    ds = xr.Dataset(
        {
            "x": (("row", "feature"), x),
            "y": ("row", labels),
            "split": ("row", np.repeat(np.array(SPLITS, dtype=object), sizes).astype(str)),
            "x_mean": ("feature", mean[per_feature]),
            "x_std": ("feature", std[per_feature]),
            "channel_mean": ("channel", mean),
            "channel_std": ("channel", std),
            "y_mean": ((), 0.0),
            "y_std": ((), 1.0),
        },
        coords={"row": order, "feature": features},
        attrs={"dataset": dataset, "task": "classification", "seed": int(seed), "standardise": standardise,
               "table_sha256": sha256_file(arrays_path), "arrays_sha256": digest,
               "fractions": [float(f) for f in source.fractions], "image_shape": list(source.image_shape),
               "n_classes": source.n_classes},
    )
    with atomic_path(out_path) as temp:
        ds.to_netcdf(temp, engine="netcdf4", encoding={"x": {"zlib": True, "complevel": 1}})
    log.info("%s: wrote %s (train/valid/test = %d/%d/%d)", dataset, out_path, *sizes)
    return Path(out_path)

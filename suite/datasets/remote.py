"""Datasets downloaded from mirrors and kept in a verified cache: MNIST, Fashion-MNIST, CIFAR-10.

Each dataset lives in ``data_dir / name``. `fetch` downloads (checksums verified, mirrors tried in
order, ``$FWBENCH_MIRRORS_<NAME>`` overrides them); `load` never downloads: it checks the cached
files (see `cache.VerifiedCache`) and parses them into `Arrays`. The file tables (names, sizes,
sha256) are constructor arguments with the real tables as defaults, so tests can inject tiny
fake files.

CIFAR-10 keeps the 7 extracted files (5 training batches, the test batch, ``batches.meta.txt``)
and deletes the 170 MB archive once they are extracted and recorded; ``fetch(force=True)``
downloads the archive again. An archive put in the folder by hand is used by `fetch` as is.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from . import cifar, idx
from .base import Arrays, Dataset
from .cache import VerifiedCache, corrupt_error, missing_error
from .download import DEFAULT_TIMEOUT, RemoteFile, download, resolve_mirrors, sha256_file

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)
CIFAR10_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class IdxFiles:
    """The four gzipped IDX files of an MNIST-like dataset."""

    train_images: RemoteFile
    train_labels: RemoteFile
    test_images: RemoteFile
    test_labels: RemoteFile

    def all(self) -> tuple[RemoteFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


@dataclass(frozen=True)
class CifarFiles:
    """The CIFAR-10 binary archive, and the number of records in each of its batch files."""

    archive: RemoteFile
    records_per_batch: int = cifar.RECORDS_PER_BATCH


MNIST_FILES = IdxFiles(
    RemoteFile("train-images-idx3-ubyte.gz", 9_912_422,
               "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
               "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    RemoteFile("train-labels-idx1-ubyte.gz", 28_881,
               "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
               "d53e105ee54ea40749a09fcbcd1e9432"),
    RemoteFile("t10k-images-idx3-ubyte.gz", 1_648_877,
               "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
               "9fb629c4189551a2d022fa330f9573f3"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", 4_542,
               "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
               "ec29112dd5afa0611ce80d1b7f02629c"),
)
FASHION_MNIST_FILES = IdxFiles(
    RemoteFile("train-images-idx3-ubyte.gz", 26_421_880,
               "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
               "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    RemoteFile("train-labels-idx1-ubyte.gz", 29_515,
               "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
               "25c81989df183df01b3e8a0aad5dffbe"),
    RemoteFile("t10k-images-idx3-ubyte.gz", 4_422_102,
               "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
               "bef4ecab320f06d8554ea6380940ec79"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", 5_148,
               "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
               "bb300cfdad3c16e7a12a480ee83cd310"),
)
CIFAR10_FILES = CifarFiles(
    RemoteFile("cifar-10-binary.tar.gz", 170_052_171,
               "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
               "c32a1d4ab5d03f1284b67883e8d87530"),
)


class RemoteDataset(Dataset):
    """Shared mirror handling and cache checks; subclasses give the file table and the parsing."""

    default_mirrors: tuple[str, ...] = ()

    def __init__(self, mirrors: Sequence[str] | None = None, *, timeout: float = DEFAULT_TIMEOUT):
        self._mirrors = tuple(mirrors) if mirrors is not None else None
        self.timeout = timeout

    def mirrors(self) -> tuple[str, ...]:
        """Mirrors given to the constructor, else ``$FWBENCH_MIRRORS_<NAME>``, else the defaults."""
        if self._mirrors is not None:
            return tuple(m if m.endswith("/") else m + "/" for m in self._mirrors)
        return resolve_mirrors(self.name, self.default_mirrors)

    def download_size(self) -> str:
        """Human-readable total download size, for messages."""
        return f"{sum(f.size for f in self._remote_files()) / 1e6:,.0f} MB"

    def _remote_files(self) -> tuple[RemoteFile, ...]:
        raise NotImplementedError

    def _check_cache(self, folder: Path, expected: Sequence[tuple[str, int | None, str | None]]) -> None:
        """Raise the missing-files or corrupt-file `DatasetError` for ``(name, size, sha256)``s."""
        missing = [name for name, _, _ in expected if not (folder / name).is_file()]
        if missing:
            raise missing_error(self.name, folder, missing, self.download_size())
        cache = VerifiedCache(folder)
        for name, size, sha256 in expected:
            reason = cache.problem(name, size, sha256)
            if reason is not None:
                raise corrupt_error(self.name, folder / name, reason)

    def _parse(self, parse):
        """Run ``parse()``, turning a format error into one that names the dataset and the fix."""
        try:
            return parse()
        except DatasetError as exc:
            raise DatasetError(f"dataset '{self.name}': {exc}; delete the file or run "
                               f"`bench data fetch {self.name} --force`") from None

    def _download(self, file: RemoteFile, folder: Path, progress: bool) -> None:
        download(file, self.mirrors(), folder, dataset=self.name, progress=progress,
                 timeout=self.timeout)
        VerifiedCache(folder).record(file.name, file.sha256)


class IdxDataset(RemoteDataset):
    """An MNIST-like dataset: four gzipped IDX files, 28x28 grey images, 10 classes."""

    input_shape = (1, 28, 28)
    num_classes = 10
    class_names: tuple[str, ...] = tuple(str(i) for i in range(10))
    default_files: IdxFiles

    def __init__(self, files: IdxFiles | None = None, mirrors: Sequence[str] | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT):
        super().__init__(mirrors, timeout=timeout)
        self.file_table = files or self.default_files

    def _remote_files(self) -> tuple[RemoteFile, ...]:
        return self.file_table.all()

    def files(self) -> list[str]:
        return [f.name for f in self.file_table.all()]

    def is_cached(self, data_dir: Path) -> bool:
        """Every file present with its expected size (cheap: no hashing)."""
        folder = Path(data_dir) / self.name
        return all(_has_size(folder / f.name, f.size) for f in self.file_table.all())

    def fetch(self, data_dir: Path, *, progress: bool = True, force: bool = False) -> Path:
        """Download every file that is missing or fails its checksum (all of them with ``force``)."""
        folder = Path(data_dir) / self.name
        folder.mkdir(parents=True, exist_ok=True)
        cache = VerifiedCache(folder)
        for file in self.file_table.all():
            if force or cache.problem(file.name, file.size, file.sha256) is not None:
                self._download(file, folder, progress)
        return folder

    def load(self, data_dir: Path) -> Arrays:
        """Images uint8 ``(N, 1, 28, 28)``, labels int64 ``(N,)``, from the verified cache."""
        folder = Path(data_dir) / self.name
        table = self.file_table
        self._check_cache(folder, [(f.name, f.size, f.sha256) for f in table.all()])

        def parse():
            image_shape = self.input_shape[1:]
            splits = []
            for images_file, labels_file in ((table.train_images, table.train_labels),
                                             (table.test_images, table.test_labels)):
                x = idx.read_images(folder / images_file.name, image_shape)
                y = idx.read_labels(folder / labels_file.name, self.num_classes)
                if len(x) != len(y):
                    raise DatasetError(f"{folder / images_file.name}: {len(x):,} images but "
                                       f"{labels_file.name} has {len(y):,} labels")
                splits += [x, y]
            return splits

        x_train, y_train, x_test, y_test = self._parse(parse)
        return Arrays(x_train, y_train, x_test, y_test, tuple(self.class_names))


class Mnist(IdxDataset):
    name = "mnist"
    train_size = 60_000
    description = "MNIST handwritten digits (28x28 grey), 60,000 train / 10,000 test; download ~12 MB"
    default_files = MNIST_FILES
    default_mirrors = MNIST_MIRRORS


class FashionMnist(IdxDataset):
    name = "fashion_mnist"
    train_size = 60_000
    description = ("Fashion-MNIST clothing images (28x28 grey), 60,000 train / 10,000 test; "
                   "download ~31 MB")
    class_names = FASHION_MNIST_CLASSES
    default_files = FASHION_MNIST_FILES
    default_mirrors = FASHION_MNIST_MIRRORS


class Cifar10(RemoteDataset):
    """CIFAR-10, binary version (never the pickled "python version")."""

    name = "cifar10"
    train_size = 50_000
    description = ("CIFAR-10 colour images (3x32x32), 50,000 train / 10,000 test, binary version; "
                   "download ~170 MB")
    input_shape = cifar.IMAGE_SHAPE
    num_classes = 10
    default_mirrors = CIFAR10_MIRRORS

    def __init__(self, files: CifarFiles | None = None, mirrors: Sequence[str] | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT):
        super().__init__(mirrors, timeout=timeout)
        self.file_table = files or CIFAR10_FILES

    def _remote_files(self) -> tuple[RemoteFile, ...]:
        return (self.file_table.archive,)

    def _expected(self) -> list[tuple[str, int | None, None]]:
        """(name, size, sha256) of the extracted files; sha256 is the one recorded at extraction."""
        batch = self.file_table.records_per_batch * cifar.RECORD_BYTES
        return [(name, batch, None) for name in (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH)] + [
            (cifar.META, None, None)]

    def files(self) -> list[str]:
        """The extracted files that `load` reads (the archive is deleted after extraction)."""
        return list(cifar.MEMBERS)

    def is_cached(self, data_dir: Path) -> bool:
        """Every extracted file present, batches with their exact size (cheap: no hashing)."""
        folder = Path(data_dir) / self.name
        return all(_has_size(folder / name, size) for name, size, _ in self._expected())

    def fetch(self, data_dir: Path, *, progress: bool = True, force: bool = False) -> Path:
        """Download the archive (unless a verified copy is in the folder), extract it safely,
        record the extracted files' sha256 and delete the archive."""
        folder = Path(data_dir) / self.name
        folder.mkdir(parents=True, exist_ok=True)
        cache = VerifiedCache(folder)
        if not force and all(cache.problem(*e) is None for e in self._expected()):
            return folder
        archive = self.file_table.archive
        if force or cache.problem(archive.name, archive.size, archive.sha256) is not None:
            self._download(archive, folder, progress)
        for path in cifar.safe_extract(folder / archive.name, folder):
            cache.record(path.name, sha256_file(path))
        (folder / archive.name).unlink(missing_ok=True)
        cache.forget(archive.name)
        return folder

    def load(self, data_dir: Path) -> Arrays:
        """Images uint8 ``(N, 3, 32, 32)``, labels int64 ``(N,)``, class names from the meta file."""
        folder = Path(data_dir) / self.name
        self._check_cache(folder, self._expected())
        records = self.file_table.records_per_batch

        def parse():
            train = [cifar.read_batch(folder / name, records, self.num_classes)
                     for name in cifar.TRAIN_BATCHES]
            x_test, y_test = cifar.read_batch(folder / cifar.TEST_BATCH, records, self.num_classes)
            names = cifar.read_class_names(folder / cifar.META, self.num_classes)
            x_train = np.concatenate([x for x, _ in train])
            y_train = np.concatenate([y for _, y in train])
            return x_train, y_train, x_test, y_test, names

        x_train, y_train, x_test, y_test, names = self._parse(parse)
        return Arrays(x_train, y_train, x_test, y_test, names)


def _has_size(path: Path, size: int | None) -> bool:
    try:
        return path.is_file() and (size is None or path.stat().st_size == size)
    except OSError:
        return False

"""MNIST and Fashion-MNIST: the standard IDX files, downloaded once into the data folder.

Files, sizes and SHA-256 sums: MNIST, Y. LeCun, C. Cortes, C. J. C. Burges,
http://yann.lecun.com/exdb/mnist/ (sizes as published there; the SHA-256 sums as
published with TensorFlow Datasets' and torchvision-era mirrors' checksum lists).
Fashion-MNIST, H. Xiao, K. Rasul, R. Vollgraf, arXiv:1708.07747, MIT licence,
https://github.com/zalandoresearch/fashion-mnist (which publishes the MD5 sums; the
SHA-256 sums are TensorFlow Datasets'). See :mod:`fastnn.datasets.download` for the
folder, the checks and the errors.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .download import RemoteDataset, RemoteFile, fetch
from .loaders import load_idx
from ..validation import flag

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


def _files(*published: Tuple[int, str]) -> Tuple[RemoteFile, ...]:
    """The four files in the order train images, train labels, test images, test labels,
    from their published (size, SHA-256)."""
    names = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
    return tuple(RemoteFile(name, size, sha256) for name, (size, sha256) in zip(names, published))


MNIST = RemoteDataset(
    name="mnist",
    files=_files(
        (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/",
             "http://yann.lecun.com/exdb/mnist/"),
)

FASHION_MNIST = RemoteDataset(
    name="fashion_mnist",
    files=_files(
        (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/"
             "fashion/"),
)

#: Fashion-MNIST's class names, by label.
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")

Split = Tuple[np.ndarray, np.ndarray]


def _load(dataset: RemoteDataset, flatten: bool,
          mirrors: Optional[Sequence[str]]) -> Tuple[Split, Split]:
    flatten = flag("flatten", flatten)
    paths = fetch(dataset, mirrors)
    parts = []
    for images_file, labels_file in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        images, labels = load_idx(paths[images_file]), load_idx(paths[labels_file])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{paths[images_file]}, {paths[labels_file]}: expected images "
                             f"(N, rows, columns) and N labels, got {images.shape} and "
                             f"{labels.shape}")
        x = images.astype(np.float32) / np.float32(255.0)
        parts.append(((x.reshape(len(x), -1) if flatten else x), labels.astype(np.int64)))
    return parts[0], parts[1]


def load_mnist(flatten: bool = True,
               mirrors: Optional[Sequence[str]] = None) -> Tuple[Split, Split]:
    """The MNIST handwritten digits: ``(x_train, y_train), (x_test, y_test)`` as Keras'
    ``mnist.load_data()``, ready for ``fit``.

    x float32 (60000, 784) and (10000, 784) (or (N, 28, 28) when not ``flatten``), pixels
    scaled from 0..255 to [0, 1]; y int64 labels 0-9. The four IDX files are downloaded on
    first use (about 11 MB) from the first of ``mirrors`` (default :data:`MNIST`'s) that
    serves them with the published SHA-256, into ``cache_dir()/datasets/mnist`` (or
    ``$FASTNN_DATA/mnist``), then read from there. Offline, DatasetUnavailableError names
    the URLs tried and that folder, where the files may be put by hand.
    """
    return _load(MNIST, flatten, mirrors)


def load_fashion_mnist(flatten: bool = True,
                       mirrors: Optional[Sequence[str]] = None) -> Tuple[Split, Split]:
    """Zalando's Fashion-MNIST, MNIST's drop-in replacement (10 kinds of clothing,
    :data:`FASHION_CLASSES`): as :func:`load_mnist`, folder ``fashion_mnist`` (about 30 MB)."""
    return _load(FASHION_MNIST, flatten, mirrors)

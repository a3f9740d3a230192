"""Datasets and the LightningDataModule behind ``--data SPEC``.

Every dataset is read from its standard on-disk format; nothing is ever
downloaded. A data spec names a kind and, for all but the embedded default, a
directory:

================================  =============================================
``fashion-mnist``                 the stratified Fashion-MNIST subset shipped in
                                  ``earlyexit/data/fashion_mnist_subset.npz``
``fashion-mnist:<dir>``           the full set, as the four IDX files (gzipped
                                  or not) that Debian's ``dataset-fashion-mnist``
                                  installs in ``/usr/share/datasets/fashion-mnist``
``cifar10:<dir>``                 CIFAR-10's python batches (``data_batch_1..5``,
                                  ``test_batch``, ``batches.meta``)
``imagefolder:<dir>``             ``<dir>/train/<class>/*`` and ``<dir>/val/<class>/*``
``audio:<dir>``                   audio files plus a ``filename,label`` CSV
                                  (default ``<dir>/labels.csv``)
================================  =============================================

Splits are deterministic and stratified. *test* is the official test split
(``val/`` for an ImageFolder; carved out of the clips for audio unless the CSV
has a ``split`` column); *profile*, the split PORTEND profiles exit rates and
branch accuracies on, is carved out of the official training split, so it is
disjoint from *test*; *train* is the rest of the training split.
"""

from earlyexit.data.audio import read_audio_labels
from earlyexit.data.cifar import CIFAR10_CLASSES, load_cifar10
from earlyexit.data.datasets import ArrayImageDataset
from earlyexit.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    embedded_fashion_mnist_path,
    load_fashion_mnist,
    read_idx,
)
from earlyexit.data.module import EarlyExitDataModule
from earlyexit.data.spec import (
    DATA_KINDS,
    SPLITS,
    DatasetNotFoundError,
    DataSpec,
    parse_data_spec,
    stratified_split,
)

__all__ = [
    "CIFAR10_CLASSES",
    "DATA_KINDS",
    "FASHION_MNIST_CLASSES",
    "SPLITS",
    "ArrayImageDataset",
    "DataSpec",
    "DatasetNotFoundError",
    "EarlyExitDataModule",
    "embedded_fashion_mnist_path",
    "load_cifar10",
    "load_fashion_mnist",
    "parse_data_spec",
    "read_audio_labels",
    "read_idx",
    "stratified_split",
]

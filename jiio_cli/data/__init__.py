"""Data: the shipped MNIST-5k digits, image and mask files, and whole image datasets.

Images are float32 tensors in [0, 1], (C, H, W) alone or (N, C, H, W) in a batch; masks are
bool (H, W) with True for known pixels. Bad user files raise a one-line UsageError.
"""

from jiio_cli.data.channels import convert_channels
from jiio_cli.data.datasets import array_to_images, list_image_files, load_image_dataset
from jiio_cli.data.idx import read_idx
from jiio_cli.data.images import (
    make_grid,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
    write_grid,
    write_image,
)
from jiio_cli.data.mnist import load_mnist5k, split_indices
from jiio_cli.data.paths import sample_data_dir

__all__ = [
    "array_to_images",
    "convert_channels",
    "list_image_files",
    "load_image_dataset",
    "load_mnist5k",
    "make_grid",
    "read_idx",
    "read_image",
    "read_mask",
    "resize_image",
    "resize_mask",
    "sample_data_dir",
    "split_indices",
    "write_grid",
    "write_image",
]

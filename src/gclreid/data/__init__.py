"""Datasets as released (Market-1501, DukeMTMC-reID, MSMT17 V1/V2), the user's own folders,
SynthReID; image loading, transforms, samplers and loaders. See docs/datasets.md."""
from .records import (IMAGE_SUFFIXES, SPLITS, DatasetCountWarning, ImageRecord, ReIDDataset, find_images,
                      split_stats)
from .registry import (build_dataset, dataset_aliases, dataset_from_config, dataset_options, get_dataset_class,
                       list_datasets, register_dataset, unregister_dataset)
# Importing the readers registers them.
from .market import DukeMTMCreID, Market1501, MarketLayoutDataset, SynthReID
from .msmt17 import MSMT17
from .folder import FolderDataset
from .images import BadImageWarning, ImageDataset, check_images, load_image
from .transforms import (IMAGENET_MEAN, IMAGENET_STD, ColorJitter, Compose, GaussianBlur, PadCrop,
                         RandomErasing, RandomHorizontalFlip, RandomRotation, Resize, ToTensorNormalize,
                         build_test_transform, build_train_transform, denormalize, tensor_to_pil)
from .samplers import RandomIdentitySampler, ShardedSampler, build_loader, seed_worker
from .validation import hold_out_identities

__all__ = [
    "IMAGE_SUFFIXES", "SPLITS", "DatasetCountWarning", "ImageRecord", "ReIDDataset", "find_images", "split_stats",
    "build_dataset", "dataset_aliases", "dataset_from_config", "dataset_options", "get_dataset_class",
    "list_datasets", "register_dataset", "unregister_dataset",
    "DukeMTMCreID", "Market1501", "MarketLayoutDataset", "SynthReID", "MSMT17", "FolderDataset",
    "BadImageWarning", "ImageDataset", "check_images", "load_image",
    "IMAGENET_MEAN", "IMAGENET_STD", "ColorJitter", "Compose", "GaussianBlur", "PadCrop", "RandomErasing",
    "RandomHorizontalFlip", "RandomRotation", "Resize", "ToTensorNormalize", "build_test_transform",
    "build_train_transform", "denormalize", "tensor_to_pil",
    "RandomIdentitySampler", "ShardedSampler", "build_loader", "seed_worker", "hold_out_identities",
]

"""Lightning data modules: image folders, in-memory tensors and torchvision datasets."""

from project.datamodules.augment import BatchAffine
from project.datamodules.image_folder import ImageFolderDataModule
from project.datamodules.tensor_data import TensorDataModule
from project.datamodules.torchvision_data import TorchvisionDataModule
from project.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransforms
from project.engine.data import LoaderOptions

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchAffine",
    "ImageFolderDataModule",
    "ImageTransforms",
    "LoaderOptions",
    "TensorDataModule",
    "TorchvisionDataModule",
]

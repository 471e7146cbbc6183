"""Data for minclip: CLIP's preprocessing, the procedural Shapes dataset, datasets read from disk
(CSV of image-caption pairs, image folders, CIFAR-10) and a repeatable NumPy DataLoader."""
from .datasets import (
    CIFAR10,
    CIFAR10_TEMPLATES,
    CSV_CAPTION_KEY,
    CSV_IMG_KEY,
    CSV_SEPARATOR,
    IMG_EXTENSIONS,
    CsvImageText,
    ImageFolder,
    InMemory,
    UnreadableImage,
)
from .loader import DataLoader
from .shapes import (
    BACKGROUNDS,
    CAPTION_TEMPLATES,
    COLOUR_RGB,
    COLOURS,
    COUNTS,
    HELDOUT_PAIRS,
    POSITIONS,
    SHAPES,
    SHIFTS,
    SIZES,
    SYNONYMS,
    TEMPLATES,
    TEXTURES,
    VARIED_FRAMES,
    Shapes,
)
from .transforms import (
    CLIP_MEAN,
    CLIP_STD,
    clip_preprocess,
    denormalize,
    random_hflip,
    random_resized_crop,
    to_tensor_normalized,
    train_transform,
)

__all__ = ["BACKGROUNDS", "CAPTION_TEMPLATES", "CIFAR10", "CIFAR10_TEMPLATES", "CLIP_MEAN", "CLIP_STD", "COLOURS",
           "COLOUR_RGB", "COUNTS", "CSV_CAPTION_KEY", "CSV_IMG_KEY", "CSV_SEPARATOR", "CsvImageText", "DataLoader",
           "HELDOUT_PAIRS", "IMG_EXTENSIONS", "ImageFolder", "InMemory", "POSITIONS", "SHAPES", "SHIFTS", "SIZES",
           "SYNONYMS", "Shapes", "TEMPLATES", "TEXTURES", "UnreadableImage", "VARIED_FRAMES", "clip_preprocess",
           "denormalize", "random_hflip", "random_resized_crop", "to_tensor_normalized", "train_transform"]

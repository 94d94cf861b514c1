"""Model inputs from files: images resized and normalised as torchvision's ImageNet models expect, or .npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnnsplit.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224  # torchvision's classification preset: resize to 256, centre-crop 224


def load_image(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """One image as a (1, 3, H, W) float32 tensor: RGB, resized (short side H * 256/224, bilinear),
    centre-cropped, scaled to [0, 1] and normalised with the ImageNet mean and std."""
    from PIL import Image, UnidentifiedImageError

    if len(shape) != 4 or shape[1] != 3:
        raise UsageError(f"images need a model input of shape Nx3xHxW, not {shape}", "pass a .npy tensor")
    try:
        with Image.open(path) as raw:
            image = raw.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise UsageError(
            f"cannot read image {path} ({exc})", "pass a JPEG or PNG file, or a .npy tensor"
        ) from exc
    height, width = shape[2], shape[3]
    short = round(min(height, width) * RESIZE_RATIO)
    scale = short / min(image.size)
    image = image.resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.BILINEAR
    )
    left, top = round((image.width - width) / 2), round((image.height - height) / 2)  # as torchvision
    image = image.crop((left, top, left + width, top + height))
    array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.array(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    std = np.array(IMAGENET_STD, dtype=np.float32)[:, None, None]
    return ((array - mean) / std)[None].astype(np.float32)


def load_npy(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """A .npy tensor of one sample (C, H, W) or a batch (N, C, H, W), checked against the model's input."""
    try:
        array = np.load(str(path), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path} as a .npy array ({exc})", "save it with numpy.save") from exc
    if array.ndim == len(shape) - 1:
        array = array[None]
    if tuple(array.shape[1:]) != tuple(shape[1:]):
        expected = "x".join(str(d) for d in shape[1:])
        raise UsageError(
            f"{path} holds shape {'x'.join(map(str, array.shape))}, the model takes Nx{expected}",
            "pass a tensor of the model's input shape",
        )
    return array.astype(np.float32, copy=False)


def load_inputs(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """A batch from a .npy file, an image file, or a folder of images (sorted by name)."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"file not found: {path}", "check the path")
    if p.is_dir():
        images = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise UsageError(
                f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})", "add images or pass a .npy"
            )
        return np.concatenate([load_image(f, shape) for f in images])
    if p.suffix.lower() == ".npy":
        return load_npy(p, shape)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return load_image(p, shape)
    raise UsageError(f"cannot tell what {path} holds from its extension", "pass a .npy, an image or a folder")

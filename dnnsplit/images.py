"""Model inputs from files: images resized and normalised as torchvision's ImageNet models expect, or .npy.

An image reaches the model the same way from a file here and from a request body on the edge
(``load_image`` takes a path or the bytes): a client may send a camera frame's JPEG (a few kB) instead of
the float32 tensor made from it (602 kB at 224x224), and the edge makes the same tensor from it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnnsplit.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224  # torchvision's classification preset: resize to 256, centre-crop 224
JPEG_QUALITY = 90  # a frame that is not a JPEG already is sent encoded at this quality
MAX_PIXELS = 40_000_000  # an image claiming more is refused before it is decoded (a decompression bomb)
JPEG_MAGIC = b"\xff\xd8\xff"


def is_image_input(shape: tuple[int, ...], dtype: str = "float32") -> bool:
    """Whether a model input of ``shape`` and ``dtype`` is made from an RGB image (Nx3xHxW, float)."""
    return len(shape) == 4 and shape[1] == 3 and dtype in ("float32", "float")


def load_image(source: str | Path | bytes, shape: tuple[int, ...]) -> np.ndarray:
    """One image (a path, or the file's bytes) as a (1, 3, H, W) float32 tensor: RGB, resized (short
    side H * 256/224, bilinear), centre-cropped, scaled to [0, 1] and normalised with the ImageNet mean
    and std."""
    from PIL import Image, UnidentifiedImageError

    if len(shape) != 4 or shape[1] != 3:
        raise UsageError(f"images need a model input of shape Nx3xHxW, not {shape}", "pass a .npy tensor")
    name = "the image bytes" if isinstance(source, bytes) else f"image {source}"
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as raw:
            if raw.width * raw.height > MAX_PIXELS:
                raise UsageError(
                    f"{name} is {raw.width}x{raw.height}, over {MAX_PIXELS} pixels", "send a smaller image"
                )
            image = raw.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
        raise UsageError(f"cannot read {name} ({exc})", "pass a JPEG or PNG file, or a .npy tensor") from exc
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


def image_files(path: str | Path) -> list[Path] | None:
    """The image files ``path`` names (itself, or a folder's, sorted by name); None for a .npy."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"file not found: {path}", "check the path")
    if p.is_dir():
        images = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise UsageError(
                f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})", "add images or pass a .npy"
            )
        return images
    if p.suffix.lower() == ".npy":
        return None
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return [p]
    raise UsageError(f"cannot tell what {path} holds from its extension", "pass a .npy, an image or a folder")


def load_inputs(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """A batch from a .npy file, an image file, or a folder of images (sorted by name)."""
    images = image_files(path)
    if images is None:
        return load_npy(path, shape)
    return np.concatenate([load_image(f, shape) for f in images])


def frame_jpeg(data: bytes, quality: int = JPEG_QUALITY) -> bytes:
    """What a client sends for an image file's ``data``: the bytes themselves when they are a JPEG, else
    the image encoded as a JPEG at ``quality``."""
    from PIL import Image

    if data.startswith(JPEG_MAGIC):
        return data
    with Image.open(io.BytesIO(data)) as raw:
        out = io.BytesIO()
        raw.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


@dataclass(frozen=True)
class Frames:
    """A sequence of model inputs (batch first) and, when they came from image files, each one's JPEG."""

    tensors: np.ndarray
    jpegs: tuple[bytes, ...] | None = None

    def __len__(self) -> int:
        return len(self.tensors)


def load_frames(path: str | Path, shape: tuple[int, ...], quality: int = JPEG_QUALITY) -> Frames:
    """``load_inputs`` and, for image files, the JPEG each one goes on the wire as (``frame_jpeg``)."""
    images = image_files(path)
    if images is None:
        return Frames(load_npy(path, shape))
    tensors = np.concatenate([load_image(f, shape) for f in images])
    return Frames(tensors, tuple(frame_jpeg(f.read_bytes(), quality) for f in images))

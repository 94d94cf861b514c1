"""Labelled image data sets for training and evaluation: the bundled digits, or a user's ImageFolder.

``--data digits``: the real 8x8 handwritten digits that ship inside scikit-learn (1,797 images, 10
classes), upsampled to the model's input size, replicated to its channels, and normalised like any
ImageNet model input, so a digit saved as a PNG goes through ``dnnsplit run`` the same way.

``--data imagefolder:PATH``: a torchvision ImageFolder, either ``PATH/train`` + ``PATH/val`` (optionally
``PATH/test``) or one folder of class subfolders split by seed.

Splits are fixed by the seed and stratified by class, so every command sees the same test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from dnnsplit.errors import UsageError
from dnnsplit.images import IMAGENET_MEAN, IMAGENET_STD

SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train / val / test when one pool is split
PRESIZE_LIMIT = 64 * 64  # up to this many pixels the digits are upsampled once, up front (29 MB at 64x64)


@dataclass(frozen=True)
class DataSpec:
    """What ``--data`` names: ``digits`` or ``imagefolder`` with a path."""

    kind: str
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        if text == "digits":
            return cls("digits")
        if text.startswith("imagefolder:"):
            path = Path(text.split(":", 1)[1]).expanduser()
            if not path.is_dir():
                raise UsageError(f"ImageFolder not found: {path}", "pass imagefolder:PATH to a directory")
            return cls("imagefolder", path)
        raise UsageError(f"unknown data source '{text}'", "use --data digits or --data imagefolder:PATH")

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


@dataclass
class DataSplits:
    """Train / validation / test sets of (image, label) pairs, shaped for one model input."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    class_names: list[str]
    source: str

    def loader(self, split: str, batch_size: int, shuffle: bool = False, workers: int = 0) -> DataLoader:
        data = {"train": self.train, "val": self.val, "test": self.test}[split]
        generator = torch.Generator().manual_seed(0)
        return DataLoader(
            data, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=generator
        )

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}  # type: ignore[arg-type]


def load_data(
    spec: DataSpec | str, input_shape: Sequence[int], seed: int = 0, augment: bool = True
) -> DataSplits:
    """The splits of ``spec`` for a model taking ``input_shape`` (NxCxHxW)."""
    if isinstance(spec, str):
        spec = DataSpec.parse(spec)
    if len(input_shape) != 4:
        raise UsageError(
            f"training needs an image input NxCxHxW, not {tuple(input_shape)}", "pass --input-shape"
        )
    channels, height, width = (int(v) for v in input_shape[1:])
    if spec.kind == "digits":
        return _digits(channels, height, width, seed, augment)
    assert spec.path is not None
    return _image_folder(spec.path, channels, height, width, seed, augment)


def check_classes(data: DataSplits, model_classes: int) -> None:
    """A model's output count must match the data set's classes."""
    if model_classes != data.num_classes:
        raise UsageError(
            f"the model has {model_classes} outputs but {data.source} has {data.num_classes} classes",
            f"pass --num-classes {data.num_classes} (or a model trained for this data)",
        )


def _normaliser(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    if channels == 3:
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    else:
        mean, std = torch.full((channels,), 0.5), torch.full((channels,), 0.5)
    return mean.view(-1, 1, 1), std.view(-1, 1, 1)


class _Digits(Dataset):
    """8x8 digits in [0, 1] at the model's size (upsampled per item above 64x64: 224x224 takes 360 MB)."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, channels: int, size: tuple[int, int], augment: bool
    ) -> None:
        self.labels = labels
        self.channels, self.size, self.augment = channels, size, augment
        self.resized = size[0] * size[1] <= PRESIZE_LIMIT
        if self.resized:  # small sizes: upsample the whole set once instead of per item
            images = F.interpolate(images[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        self.images = images
        self.mean, self.std = _normaliser(channels)
        self.shift = max(1, round(min(size) / 16))  # about half a digit pixel each way

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index][None]
        if not self.resized:
            image = F.interpolate(image[None], size=self.size, mode="bilinear", align_corners=False)[0]
        image = image.expand(self.channels, -1, -1)
        if self.augment:
            dy, dx = (int(v) for v in torch.randint(-self.shift, self.shift + 1, (2,)))
            image = torch.roll(image, shifts=(dy, dx), dims=(1, 2))
        return (image - self.mean) / self.std, int(self.labels[index])


def _stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train_frac, val_frac, test_frac = fractions
    rest_frac = val_frac + test_frac
    train, rest = train_test_split(index, test_size=rest_frac, random_state=seed, stratify=labels)
    val, test = train_test_split(
        rest, test_size=test_frac / rest_frac, random_state=seed, stratify=labels[rest]
    )
    return train, val, test


def _digits(channels: int, height: int, width: int, seed: int, augment: bool) -> DataSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    train, val, test = _stratified_split(bunch.target, SPLIT_FRACTIONS, seed)

    def part(index: np.ndarray, aug: bool) -> _Digits:
        idx = torch.as_tensor(index)
        return _Digits(images[idx], labels[idx], channels, (height, width), aug)

    return DataSplits(
        train=part(train, augment),
        val=part(val, False),
        test=part(test, False),
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        source="digits",
    )


def _folder_transform(channels: int, height: int, width: int, augment: bool):  # noqa: ANN202
    from torchvision import transforms

    mean, std = (t.view(-1).tolist() for t in _normaliser(channels))
    steps = [transforms.Resize((height, width))]
    if augment:
        steps.append(transforms.RandomHorizontalFlip())
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


def _open_folder(path: Path, transform: object) -> Dataset:
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(
            f"cannot read ImageFolder {path}: {first}",
            "it needs one subfolder per class holding .jpg/.png images",
        ) from exc
    if len(folder) == 0:
        raise UsageError(f"ImageFolder {path} holds no images", "put .jpg/.png images in class subfolders")
    return folder


def _image_folder(root: Path, channels: int, height: int, width: int, seed: int, augment: bool) -> DataSplits:
    train_tf = _folder_transform(channels, height, width, augment)
    eval_tf = _folder_transform(channels, height, width, False)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = _open_folder(root / "train", train_tf)
        val_pool = _open_folder(root / "val", eval_tf)
        classes = list(train.classes)  # type: ignore[attr-defined]
        if list(val_pool.classes) != classes:  # type: ignore[attr-defined]
            raise UsageError(
                f"{root}/train and {root}/val have different class folders",
                "use the same class names in both",
            )
        if (root / "test").is_dir():
            val, test = val_pool, _open_folder(root / "test", eval_tf)
        else:  # the held-out pool is halved: one half calibrates, the other reports
            targets = np.asarray(val_pool.targets)  # type: ignore[attr-defined]
            val_idx, test_idx = _halves(targets, seed)
            val, test = Subset(val_pool, val_idx.tolist()), Subset(val_pool, test_idx.tolist())
    else:
        pool_train = _open_folder(root, train_tf)
        pool_eval = _open_folder(root, eval_tf)
        classes = list(pool_train.classes)  # type: ignore[attr-defined]
        targets = np.asarray(pool_train.targets)  # type: ignore[attr-defined]
        train_idx, val_idx, test_idx = _stratified_split_safe(targets, seed)
        train = Subset(pool_train, train_idx.tolist())
        val, test = Subset(pool_eval, val_idx.tolist()), Subset(pool_eval, test_idx.tolist())
    if len(classes) < 2:
        raise UsageError(
            f"ImageFolder {root} has {len(classes)} class folder(s)", "a classifier needs at least 2"
        )
    return DataSplits(train, val, test, len(classes), classes, f"imagefolder:{root}")


def _halves(targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(targets))
    return np.sort(order[::2]), np.sort(order[1::2])


def _stratified_split_safe(targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified when every class has enough images, else a plain seeded shuffle (tiny folders)."""
    counts = np.bincount(targets)
    if counts.min() >= 5:
        return _stratified_split(targets, SPLIT_FRACTIONS, seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(targets))
    n_train = max(1, int(round(len(order) * SPLIT_FRACTIONS[0])))
    n_val = max(1, int(round(len(order) * SPLIT_FRACTIONS[1])))
    if n_train + n_val >= len(order):
        raise UsageError(
            f"ImageFolder has only {len(order)} images", "a train/val/test split needs at least 3"
        )
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]

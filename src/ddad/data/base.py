"""Dataset plumbing shared by all layouts: the item list, the torch Dataset, batching, seeded splits."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .sample import Sample, read_image, read_mask

__all__ = ["Item", "AnomalyDataset", "Batch", "ImageSet", "collate", "seeded_split", "require_dir", "DatasetLayoutError"]


class DatasetLayoutError(FileNotFoundError):
    """The folder does not have the layout the chosen loader expects."""


@dataclass(frozen=True)
class Item:
    """One entry of a dataset index (paths only; pixels are read lazily)."""

    image: Path
    mask: Path | None
    label: int
    defect_type: str


def require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise DatasetLayoutError(f"expected {what} at {path}, found nothing there. {hint}")
    return path


def seeded_split(paths: Sequence[Path], train_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Deterministic split of `paths` into (train, rest): sort, permute with numpy's PCG64(seed), cut.

    Independent of file-system listing order, so the same files always give the same split.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    ordered = sorted(paths, key=lambda p: str(p))
    perm = np.random.default_rng(seed).permutation(len(ordered))
    n_train = int(round(train_fraction * len(ordered)))
    train = sorted(ordered[i] for i in perm[:n_train])
    rest = sorted(ordered[i] for i in perm[n_train:])
    return train, rest


class AnomalyDataset(Dataset):
    """A list of Items read on demand into Samples at a fixed size (a square side or (height, width); None: as
    stored).

    mask_threshold: grey/255 above which a mask pixel is anomalous (layout-specific, see read_mask).
    """

    def __init__(self, items: Sequence[Item], image_size: int | tuple[int, int] | None, mask_threshold: float,
                 name: str):
        self.items = list(items)
        self.image_size = image_size
        self.mask_threshold = mask_threshold
        self.name = name

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        it = self.items[index]
        image = read_image(it.image, self.image_size)
        if it.mask is not None:
            mask = read_mask(it.mask, self.image_size, self.mask_threshold)
            if mask.shape[-2:] != image.shape[-2:]:
                raise ValueError(
                    f"mask {it.mask} is {tuple(mask.shape[-2:])} but its image is {tuple(image.shape[-2:])}; "
                    "give an image_size so both are resized, or fix the mask file"
                )
        elif it.label == 0:
            mask = torch.zeros(1, *image.shape[-2:])
        else:
            mask = None
        return Sample(image=image, mask=mask, label=it.label, path=str(it.image), defect_type=it.defect_type)

    @property
    def labels(self) -> list[int]:
        return [it.label for it in self.items]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for it in self.items:
            out[it.defect_type] = out.get(it.defect_type, 0) + 1
        return out


@dataclass(frozen=True)
class Batch:
    """A collated list of Samples. masks is None when any sample lacks one."""

    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    masks: torch.Tensor | None  # (B, 1, H, W) {0, 1}
    labels: torch.Tensor  # (B,) int64
    paths: tuple[str, ...]
    defect_types: tuple[str, ...]

    def pin_memory(self) -> "Batch":
        """Page-locked copies of the tensors (DataLoader(pin_memory=True) calls this for a GPU)."""
        return replace(self, images=self.images.pin_memory(),
                       masks=None if self.masks is None else self.masks.pin_memory())


def collate(samples: Sequence[Sample]) -> Batch:
    masks = None
    if all(s.mask is not None for s in samples):
        masks = torch.stack([s.mask for s in samples])  # type: ignore[misc]
    return Batch(
        images=torch.stack([s.image for s in samples]),
        masks=masks,
        labels=torch.tensor([s.label for s in samples], dtype=torch.int64),
        paths=tuple(s.path for s in samples),
        defect_types=tuple(s.defect_type for s in samples),
    )


def _worker_count(workers: int | None, gpu: bool) -> int:
    """data.workers resolved: None = 0 on a CPU (its cores run the model), 4 on a GPU."""
    n = (4 if gpu else 0) if workers is None else workers
    if n < 0:
        raise ValueError(f"data.workers must be >= 0 (or unset for the automatic choice), got {n}")
    return n


def loader(dataset: Dataset, batch_size: int, workers: int | None = None, device: str | torch.device = "cpu",
           collate_fn=collate) -> DataLoader:
    """Batches of `dataset` in order, read on demand (memory holds a few batches, not the dataset).
    workers None: 0 on a CPU (decoding in the main process leaves the cores to the model), 4 on a GPU; pinned
    memory on a GPU."""
    gpu = torch.device(device).type == "cuda"
    n = _worker_count(workers, gpu)
    return DataLoader(dataset, batch_size=max(1, batch_size), shuffle=False, collate_fn=collate_fn, num_workers=n,
                      pin_memory=gpu, prefetch_factor=2 if n else None)


class _Rows(Dataset):
    """One image tensor per index (what a DataLoader over an ImageSet reads)."""

    def __init__(self, dataset: AnomalyDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.dataset[index].image


class ImageSet:
    """The images of a dataset, indexed like an (N, C, H, W) tensor but read on demand: `s[idx]` (an index tensor,
    list, slice or int) decodes and stacks the chosen images, so memory holds a batch, not the dataset.
    `map(fn)` gives a view whose batches pass through fn (e.g. [0, 1] -> [-1, 1]). Training, adaptation and
    calibration take an ImageSet or a tensor alike; the same indices give the same pixels either way.

    workers: DataLoader processes that decode batches ahead of the model (`draws`); None = 0 on a CPU, 4 on a GPU.
    """

    def __init__(self, dataset: AnomalyDataset, fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 workers: int | None = None):
        self.dataset, self.fn, self.workers = dataset, fn, workers

    def __len__(self) -> int:
        return len(self.dataset)

    @cached_property
    def shape(self) -> tuple[int, ...]:
        """(N, C, H, W), from one image read once (callers ask for it every training step)."""
        if not len(self):
            return (0,)
        return (len(self),) + tuple(self[0:1].shape[1:])

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.fn is None else self.fn(x)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int):
            return self[[index]][0]
        if isinstance(index, slice):
            ids: Iterable[int] = range(len(self))[index]
        elif isinstance(index, torch.Tensor):
            ids = index.reshape(-1).tolist()
        else:
            ids = list(index)
        return self._finish(torch.stack([self.dataset[int(i)].image for i in ids]))

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "ImageSet":
        inner = self.fn
        return ImageSet(self.dataset, fn if inner is None else (lambda x: fn(inner(x))), self.workers)

    def stack(self) -> torch.Tensor:
        """Every image in one tensor (for the small sets that are used whole, e.g. a proxy validation set)."""
        return self[0 : len(self)]

    def draws(self, index_lists: Iterable[Sequence[int]], device: str | torch.device = "cpu"):
        """Batches for the given index lists, in order, decoded by `workers` processes ahead of use (pinned on a
        GPU); in the calling process where workers is 0."""
        gpu = torch.device(device).type == "cuda"
        n = _worker_count(self.workers, gpu)
        if n == 0:
            for ids in index_lists:
                yield self[list(ids)]
            return
        dl = DataLoader(_Rows(self.dataset), batch_sampler=[list(i) for i in index_lists], num_workers=n,
                        pin_memory=gpu, prefetch_factor=2)
        for x in dl:
            yield self._finish(x)

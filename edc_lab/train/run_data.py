"""The data of a training run: its train and validation datasets, the facts a checkpoint records about them,
and each step's batch, drawn, moved to the device and augmented as a function of (seed, step, rank) only.

Our choices (DESIGN §2): synthetic scenes are cached in memory; the batches of a step come from
:class:`~edc_lab.train.distributed.StepSampler`, the crops and flips from a generator seeded by the
step, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from edc_lab.train import distributed
from edc_lab.train.config import TrainConfig


class CachedDataset(Dataset):
    """Keeps every sample of a small dataset in memory after its first read.

    Synthetic scenes are generated on the fly (deterministically per index);
    for the few hundred scenes of a CPU run, generating each once is cheaper
    than generating it again every epoch.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if index not in self.cache:
            self.cache[index] = self.dataset[index]
        return self.cache[index]

    def __getattr__(self, name: str):
        if name in ("dataset", "cache"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def build_datasets(config: TrainConfig) -> tuple[Dataset, Dataset]:
    """(train, validation) datasets of the config; synthetic scenes are cached in memory.

    The validation split is ``config.val_split``, by default the data layer's
    ``"val"`` split for synthetic scenes (its own seed range: never a training or
    test scene) and ``"test"`` for real datasets.
    """
    from edc_lab.data.datasets import build_dataset
    from edc_lab.data.transforms import CenterCrop

    common = dict(root=config.root, size=config.size, cloud_cover=tuple(config.cloud_cover), seed=config.data_seed)
    if config.data == "synthetic":
        common["family"] = config.scene_family
        common["clouds"] = config.clouds()
    elif config.scene_family != "default":
        raise ValueError(f"scene_family={config.scene_family!r} concerns synthetic scenes only, found data={config.data!r}")
    # training crops come from augment_batch (seeded by the step), not from the reader's global RNG
    train_set = build_dataset(config.data, split="train", count=config.train_count, transforms=_unchanged, **common)
    val_split = config.val_split or ("val" if config.data == "synthetic" else "test")
    # real data: the centre of each validation scene (the same pixels every time)
    center = None if config.data == "synthetic" else CenterCrop(config.size, at_most=True)
    val_set = build_dataset(config.data, split=val_split, count=config.val_count, transforms=center, **common)
    if config.data == "synthetic":
        val_set = CachedDataset(val_set)
        if config.num_workers == 0:  # worker processes would each keep their own copy: generate there instead
            train_set = CachedDataset(train_set)
    return train_set, val_set


def _unchanged(sample: dict) -> dict:
    return sample


def dataset_info(dataset: Dataset, config: TrainConfig) -> dict:
    """What ``predict`` needs to treat new images like the training data (stored in checkpoints)."""
    return {
        "name": config.data,
        "num_classes": int(dataset.num_classes),
        "class_names": list(dataset.class_names),
        "class_colors": list(getattr(dataset, "class_colors", []) or []),
        "in_sar": int(dataset.in_sar),
        "size": int(config.size),
    }


def build_loader(train_set: Dataset, config: TrainConfig, start_step: int,
                 context: distributed.DistributedContext) -> DataLoader:
    """The batches of steps ``start_step .. steps - 1`` (this rank's share), a function of (seed, step) only."""
    sampler = distributed.StepSampler(train_set, config.batch_size, config.seed, start_step, config.steps, context)
    return DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=context.device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG untouched
        persistent_workers=False,
    )


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A generator whose state depends only on (seed, step, rank): per-step augmentation."""
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device`` (other values unchanged)."""
    return {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value for key, value in batch.items()}


def augment_batch(batch: dict, generator: torch.Generator, size: int | None = None, flips: bool = True) -> dict:
    """Random crop to ``size`` (when the samples are larger) and flips / 90° rotations, per sample.

    Uses the data layer's transforms with an explicit generator, so the result
    is a function of the generator's seed alone.
    """
    from edc_lab.data.transforms import Compose, RandomCrop, RandomFlip, RandomRotate90

    steps = []
    height, width = batch["label"].shape[-2:]
    if size is not None and (height > size or width > size):
        steps.append(RandomCrop(size))
    if flips:
        steps += [RandomFlip(), RandomRotate90()]
    if not steps:
        return batch
    transform = Compose(steps)
    batch_size = batch["label"].shape[0]
    samples = [transform({key: value[i] for key, value in batch.items()}, generator=generator) for i in range(batch_size)]
    return {key: torch.stack([sample[key] for sample in samples]) for key in batch}


def training_batch(batch: dict, config: TrainConfig, step: int, context: distributed.DistributedContext) -> dict:
    """The batch of ``step`` on this rank's device, cropped to ``config.size`` and flipped / rotated when
    ``config.augment`` (by :func:`step_generator` of (seed, step, rank))."""
    batch = to_device(batch, context.device)
    if config.augment or batch["label"].shape[-1] > config.size or batch["label"].shape[-2] > config.size:
        batch = augment_batch(batch, step_generator(config.seed, step, context.rank), config.size, config.augment)
    return batch

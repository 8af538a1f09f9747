"""From datasets to batches: per-sample seeded augmentation, padding collate, and a resumable
(iteration-indexed) distributed batch sampler."""
from typing import Iterator, List, Tuple

import numpy as np
import torch


class Augmented:
    """``dataset`` with ``transform`` applied; indexed by ``(index, epoch)`` (from
    :class:`IterationBatchSampler`) or a plain ``index`` (epoch 0). The augmentation's random
    numbers come from ``numpy.random.default_rng([seed, epoch, index])``, so a sample is the
    same in any worker, on any rank, and after a resume.

    Items: ``(image [3, S, S], target)`` (float32, or uint8 from a transform with
    ``normalize=False``) with ``target`` = normalized ``boxes``,
    ``labels``, ``difficult`` and ``index``, ``orig_size`` (h, w) of the source image.
    """

    def __init__(self, dataset, transform, seed: int = 0):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        image, target = self.dataset[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        out, t = self.transform(image, target, rng)
        t = dict(t, index=index, orig_size=image.shape[:2])
        return out, t


def collate(batch: List[Tuple[torch.Tensor, dict]]):
    """Stack images; pad GTs to ``boxes [B, G, 4]`` (zeros), ``labels [B, G]`` int64 (-1),
    ``difficult [B, G]`` bool (False), G = the most GTs of any image (0 allowed). Also
    ``index [B]`` and ``orig_size [B, 2]`` (h, w). Images laid out HWC (the transforms'
    output) are stacked as a channels-last batch: no transposing copy."""
    images = [b[0] for b in batch]
    if images and all(t.dim() == 3 and t.permute(1, 2, 0).is_contiguous() for t in images):
        images = torch.stack([t.permute(1, 2, 0) for t in images]).permute(0, 3, 1, 2)
    else:
        images = torch.stack(images)
    B = len(batch)
    G = max((len(t["labels"]) for _, t in batch), default=0)
    boxes = torch.zeros(B, G, 4)
    labels = torch.full((B, G), -1, dtype=torch.int64)
    difficult = torch.zeros(B, G, dtype=torch.bool)
    for i, (_, t) in enumerate(batch):
        g = len(t["labels"])
        if g:
            boxes[i, :g] = torch.as_tensor(np.asarray(t["boxes"], np.float32))
            labels[i, :g] = torch.as_tensor(np.asarray(t["labels"], np.int64))
            difficult[i, :g] = torch.as_tensor(np.asarray(t["difficult"], bool))
    return images, {"boxes": boxes, "labels": labels, "difficult": difficult,
                    "index": torch.tensor([t["index"] for _, t in batch]),
                    "orig_size": torch.tensor([list(t["orig_size"]) for _, t in batch])}


class IterationBatchSampler:
    """Batches of ``(index, epoch)`` keys for iterations ``start, start+1, ..., total-1``.

    Epoch ``e`` is a permutation of the dataset drawn from ``torch.Generator`` seeded with
    ``seed + e`` (or the identity with ``shuffle=False``); it is cut into global batches of
    ``batch_size * world_size`` (the incomplete last one dropped) and rank ``r`` takes its
    slice ``[r * batch_size, (r+1) * batch_size)``. Iteration ``i`` therefore names the same
    samples whatever ``start`` is: resuming at ``start`` continues exactly.
    """

    def __init__(self, n: int, batch_size: int, total: int, start: int = 0, seed: int = 0,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1):
        per_epoch = n // (batch_size * world_size)
        if per_epoch < 1:
            raise ValueError(f"batch_size {batch_size} x world_size {world_size} is larger than the "
                             f"dataset ({n} images)")
        self.n, self.batch_size, self.total, self.start = n, batch_size, total, start
        self.seed, self.shuffle, self.rank, self.world_size = seed, shuffle, rank, world_size
        self.per_epoch = per_epoch

    def __len__(self):
        return max(0, self.total - self.start)

    def _order(self, epoch):
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        epoch, order = -1, None
        for it in range(self.start, self.total):
            e, pos = divmod(it, self.per_epoch)
            if e != epoch:
                epoch, order = e, self._order(e)
            first = (pos * self.world_size + self.rank) * self.batch_size
            yield [(int(i), e) for i in order[first:first + self.batch_size]]

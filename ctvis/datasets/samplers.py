"""Samplers of the joint training on pseudo-videos and real videos.

CTVIS trains on COCO pseudo-videos and real videos together, choosing the source of every clip
with fixed weights (``DATASET_RATIO``): YTVIS19 ``[1.0, 1.5]`` (40 % pseudo), YTVIS21
``[1.0, 0.8]``, OVIS ``[1.0, 0.75]`` (pseudo-video dataset first). :class:`DatasetRatioSampler`
draws the clips; :class:`SourceAspectRatioBatchSampler` batches them as the official loader does.
"""
import bisect
import itertools
from typing import Dict, Iterator, List, Optional, Sequence, Sized, Tuple

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import BatchSampler, Sampler

from mmdet.registry import DATA_SAMPLERS


@DATA_SAMPLERS.register_module()
class DatasetRatioSampler(Sampler):
    """Infinite sampler over a ConcatDataset that picks each sample's sub-dataset by ratio.

    Every sample first draws a sub-dataset with probability ``ratios[i] / sum(ratios)``, then
    takes the next item of that sub-dataset's own stream of random permutations, so each
    sub-dataset is covered evenly and the mix follows the ratios. mmdet's ``MultiSourceSampler``
    fixes integer counts per batch instead, which cannot express 40 % with 2 clips per GPU.

    It mirrors :class:`mmengine.dataset.InfiniteSampler`: one seeded global stream, which rank r
    of W reads at positions r, r + W, r + 2W, ... (a different stream per rank, and the same
    global sample sequence for any world size); ``__len__`` is the dataset size and
    ``set_epoch`` does nothing, as an ``IterBasedTrainLoop`` expects. Batch its clips with
    :class:`SourceAspectRatioBatchSampler` (the zoo configs) or plain ``batch_size``.

    Args:
        dataset (Sized): A ConcatDataset (mmengine's, mmdet's or torch's): it needs a
            ``datasets`` list, whose order gives global indices as in the concatenation.
        ratios (Sequence[float]): One non-negative weight per sub-dataset (not all zero).
        shuffle (bool): Random permutations per sub-dataset (True) or their natural order.
            Defaults to True.
        seed (int, optional): Random seed; None draws one and syncs it across ranks.
    """

    def __init__(self,
                 dataset: Sized,
                 ratios: Sequence[float],
                 shuffle: bool = True,
                 seed: Optional[int] = None) -> None:
        name = type(self).__name__
        sub_datasets = getattr(dataset, 'datasets', None)
        if not isinstance(sub_datasets, (list, tuple)):
            raise TypeError(f'{name}: dataset must be a ConcatDataset (with a `datasets` '
                            f'list), got {type(dataset).__name__}')
        self.sizes: List[int] = [len(sub_dataset) for sub_dataset in sub_datasets]
        if len(ratios) != len(self.sizes):
            raise ValueError(f'{name}: got {len(ratios)} ratios for {len(self.sizes)} '
                             'sub-datasets')
        ratios_array = np.asarray(ratios, dtype=np.float64)
        if not np.all(np.isfinite(ratios_array)) or (ratios_array < 0).any() or \
                ratios_array.sum() <= 0:
            raise ValueError(f'{name}: ratios must be finite, >= 0 and not all 0, got {ratios}')
        for index, (ratio, size) in enumerate(zip(ratios_array, self.sizes)):
            if ratio > 0 and size == 0:
                raise ValueError(f'{name}: sub-dataset {index} '
                                 f'({type(sub_datasets[index]).__name__}) is empty but has '
                                 f'ratio {ratio}')
        self.dataset = dataset
        self.ratios = ratios_array.tolist()
        self.probabilities = (ratios_array / ratios_array.sum()).tolist()
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int).tolist()
        self.shuffle = shuffle
        self.rank, self.world_size = get_dist_info()
        self.seed = sync_random_seed() if seed is None else seed

    @property
    def seed(self) -> int:
        return self._seed

    @seed.setter
    def seed(self, seed: int) -> None:
        """A new seed starts the stream again from it (a resumed run gives the interrupted
        run's seed back after loader workers may have drawn from the stream of its own)."""
        self._seed = seed
        self.indices = self._indices_of_rank()

    def _infinite_indices(self) -> Iterator[int]:
        """The global stream of ConcatDataset indices."""
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        weights = torch.tensor(self.probabilities, dtype=torch.float64)
        orders: List[Iterator[int]] = [iter(()) for _ in self.sizes]
        while True:
            choices = torch.multinomial(weights, 1024, replacement=True, generator=generator)
            for source in choices.tolist():
                local = next(orders[source], None)
                if local is None:  # this sub-dataset's pass is over: start a new one
                    size = self.sizes[source]
                    order = (torch.randperm(size, generator=generator)
                             if self.shuffle else torch.arange(size))
                    orders[source] = iter(order.tolist())
                    local = next(orders[source])
                yield self.offsets[source] + local

    def _indices_of_rank(self) -> Iterator[int]:
        """Every ``world_size``-th index of the global stream, starting at ``rank``."""
        yield from itertools.islice(self._infinite_indices(), self.rank, None, self.world_size)

    def __iter__(self) -> Iterator[int]:
        """The indices of this rank.

        Returns the one stream itself, so a new ``iter()`` continues where the last stopped
        (a ``yield from`` wrapper, as in ``InfiniteSampler``, would close the stream when the
        first iterator is garbage-collected).
        """
        return self.indices

    def __len__(self) -> int:
        """Size of the concatenated dataset."""
        return sum(self.sizes)

    def set_epoch(self, epoch: int) -> None:
        """Not used by an infinite sampler."""


@DATA_SAMPLERS.register_module()
class SourceAspectRatioBatchSampler(BatchSampler):
    """Batches whose clips share their sub-dataset and orientation, as the official loader's.

    The official joint loader (VITA's ``CombinedDataLoader`` over detectron2's aspect-ratio
    grouped loaders) fills each per-GPU batch from one source: its per-source pools are one
    shared deque, so the source drawn for a batch's first clip supplies the whole batch, and
    detectron2 groups each source's clips by orientation. Here the clips come in the sampler's
    order (:class:`DatasetRatioSampler`, so the sources keep their ratios) and wait in a bucket
    per (sub-dataset, landscape or not) until it holds ``batch_size``; a batch then pads its
    frames to a size of one orientation. The orientation is that of a video's first frame as
    annotated, and a square frame goes with the portrait ones, as in detectron2's grouping
    (``width > height`` or not, of the annotated size).

    Args:
        sampler (Sampler): The index sampler, over a ConcatDataset (mmengine's, mmdet's or
            torch's) or a single dataset whose items are videos (mmdet's video format).
        batch_size (int): Clips per batch.
        drop_last (bool): Drop the clips left in the buckets when a finite sampler ends.
            Defaults to True.
    """

    def __init__(self, sampler: Sampler, batch_size: int, drop_last: bool = True) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f'{type(self).__name__}: batch_size must be a whole number >= 1, '
                             f'got {batch_size!r}')
        dataset = getattr(sampler, 'dataset', None)
        if dataset is None:
            raise TypeError(f'{type(self).__name__}: the sampler ({type(sampler).__name__}) has '
                            'no dataset to read the clips\' sources and sizes from')
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sub_datasets = list(getattr(dataset, 'datasets', [dataset]))
        self.offsets = np.cumsum([0] + [len(d) for d in self.sub_datasets]).tolist()
        self._portrait: Dict[int, bool] = {}
        # leftovers wait for the next iterator: an infinite sampler's new iterator goes on with
        # the same stream (DatasetRatioSampler), so no drawn clip is skipped
        self._buckets: Dict[Tuple[int, bool], List[int]] = {}

    def reset(self) -> None:
        """Forget the clips waiting in the buckets (when the sampler's stream starts again)."""
        self._buckets = {}

    def group(self, index: int) -> Tuple[int, bool]:
        """(sub-dataset, whether the video's first frame is not wider than tall) of a clip."""
        source = bisect.bisect_right(self.offsets, index) - 1
        if index not in self._portrait:
            info = self.sub_datasets[source].get_data_info(index - self.offsets[source])
            frame = info['images'][0] if 'images' in info else info
            self._portrait[index] = not frame['width'] > frame['height']
        return source, self._portrait[index]

    def __iter__(self) -> Iterator[List[int]]:
        for index in self.sampler:
            bucket = self._buckets.setdefault(self.group(index), [])
            bucket.append(index)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                bucket.clear()  # before the yield: an abandoned iterator must not keep it
                yield batch
        left = [index for bucket in self._buckets.values() for index in bucket]
        self._buckets = {}
        if not self.drop_last:
            for start in range(0, len(left), self.batch_size):
                yield left[start:start + self.batch_size]

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return -(-len(self.sampler) // self.batch_size)

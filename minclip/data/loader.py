"""DataLoader: batches of NumPy arrays from a dataset, in a repeatable order.

    loader = DataLoader(Shapes("train"), batch_size=256, shuffle=True, seed=0, num_workers=2)
    for epoch in range(epochs):
        for images, tokens in loader.iter_epoch(epoch):   # (B, 3, H, W) float32, (B, 77) int64
            ...

Order: epoch e visits the items in the permutation drawn by np.random.default_rng([seed, e])
(or in index order with shuffle=False). Nothing depends on the wall clock or on how many batches
were read before, which is what makes resuming exact: `iter_epoch(e, start_batch=k)` yields the
same batches as the full epoch minus its first k.

Workers: with num_workers > 0 a thread pool builds upcoming batches (decode or render, transform,
tokenize) while the caller computes on the current one. NumPy's matrix products release the GIL,
so the two overlap even on CPython. Each batch is built by one task and batches come out in
order, so the output is identical to num_workers=0.
"""
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..tokenizer import tokenize
from .datasets import UnreadableImage
from .transforms import wants_rng


class DataLoader:
    """Batches from `dataset` (anything with __len__ and __getitem__ returning (image, target)).

    dataset[i] -> (image float32 (3, H, W), caption str | class index int).
    Yields (images float32 (B, 3, H, W), tokens int64 (B, context_length)) for captions, where
    tokens = tokenize_fn(captions) or minclip.tokenizer.tokenize(captions, context_length,
    truncate=True); or (images, labels int64 (B,)) for class indices.

    batch_size: items per batch (the last one is smaller unless drop_last=True).
    shuffle, seed: the order of epoch e is np.random.default_rng([seed, e]).permutation(N).
    num_workers: background threads (0: build batches in the calling thread).
    prefetch: batches built ahead of the consumer when num_workers > 0 (at least num_workers).
    Augmentation: if the dataset has getitem(i, rng) and its transform takes an rng (see
    transforms.wants_rng), item i of epoch e gets np.random.default_rng([seed, e, i]).
    Unreadable files: items raising UnreadableImage are dropped from their batch (a batch left
    empty is not yielded), counted in `self.skipped`, and reported in one warning per epoch.
    """

    def __init__(self, dataset, batch_size, shuffle=False, seed=0, drop_last=False, num_workers=0,
                 context_length=77, tokenize_fn=None, prefetch=2):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be an int >= 1, got {batch_size!r}")
        if int(num_workers) != num_workers or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers must be an int >= 0, got {num_workers!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"DataLoader: seed must be a non-negative int, got {seed!r}")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, int(batch_size), bool(shuffle), int(seed)
        self.drop_last, self.num_workers, self.prefetch = bool(drop_last), int(num_workers), max(int(prefetch), 1)
        self.context_length, self.tokenize_fn = context_length, tokenize_fn
        self.epoch = 0
        self.skipped = 0  # items dropped because their image could not be read, over all epochs
        self._pass_rng = hasattr(dataset, "getitem") and wants_rng(getattr(dataset, "transform", None))

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch):
        """Make `for batch in loader` iterate epoch `epoch` (iteration alone never advances it)."""
        self.epoch = int(epoch)

    def order(self, epoch):
        """int64 (N,): the item indices of epoch `epoch`, in the order they are batched."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(n)

    def __iter__(self):
        return self.iter_epoch(self.epoch)

    def iter_epoch(self, epoch, start_batch=0):
        """Generator over the batches of epoch `epoch`, skipping its first `start_batch` batches."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"DataLoader: start_batch must be in [0, {len(self)}], got {start_batch}")
        order, bs = self.order(epoch), self.batch_size
        chunks = [order[k * bs:(k + 1) * bs] for k in range(start_batch, len(self))]
        return self._generate(chunks, int(epoch))

    def _generate(self, chunks, epoch):
        skipped = []  # paths dropped this epoch, in batch order
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="minclip-data") if self.num_workers else None
        try:
            if pool is None:
                results = (self._make_batch(c, epoch) for c in chunks)
            else:
                results = self._prefetched(pool, chunks, epoch)
            for batch, bad in results:
                self.skipped += len(bad)
                skipped += bad
                if batch is not None:
                    yield batch
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)  # an abandoned epoch stops its queued batches
            if skipped:
                warnings.warn(f"DataLoader: skipped {len(skipped)} unreadable image(s) in epoch {epoch + 1}, "
                              f"first: {skipped[0]}", stacklevel=2)  # epochs counted from 1, as the progress bar

    def _prefetched(self, pool, chunks, epoch):
        """(batch, skipped paths) in order, keeping max(prefetch, num_workers) batches in flight."""
        pending, todo = deque(), iter(chunks)
        for chunk in todo:
            pending.append(pool.submit(self._make_batch, chunk, epoch))
            if len(pending) >= max(self.prefetch, self.num_workers):
                break
        while pending:
            result = pending.popleft().result()  # re-raises a worker's exception here, in order
            nxt = next(todo, None)
            if nxt is not None:  # submit before handing the batch over, so workers stay busy meanwhile
                pending.append(pool.submit(self._make_batch, nxt, epoch))
            yield result

    def _make_batch(self, indices, epoch):
        """Load and collate the items at `indices` -> (batch or None if all dropped, skipped paths)."""
        items, bad = [], []
        getitem = getattr(self.dataset, "getitem", None)
        for i in indices.tolist():
            try:
                if self._pass_rng and getitem is not None:
                    items.append(getitem(i, np.random.default_rng([self.seed, epoch, i])))
                else:
                    items.append(self.dataset[i])
            except UnreadableImage as e:
                bad.append(e.path)
        return (self._collate(items) if items else None), bad

    def _collate(self, items):
        """[(image (3, H, W), target)] -> (images float32 (B, 3, H, W), tokens (B, L) or labels (B,) int64)."""
        images = np.stack([np.asarray(x) for x, _ in items]).astype(np.float32, copy=False)  # (B, 3, H, W)
        targets = [t for _, t in items]
        if isinstance(targets[0], str):
            if self.tokenize_fn is not None:
                tokens = np.asarray(self.tokenize_fn(targets), dtype=np.int64)
            else:
                tokens = tokenize(targets, context_length=self.context_length, truncate=True)
            if tokens.ndim != 2 or len(tokens) != len(targets):
                raise ValueError(f"DataLoader: tokenize_fn returned shape {tokens.shape} for {len(targets)} captions; "
                                 "expected (B, context_length)")
            return images, tokens
        if all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in targets):
            return images, np.asarray(targets, dtype=np.int64)  # (B,)
        raise TypeError(f"DataLoader: items must be (image, str) or (image, int); got a target of type "
                        f"{type(targets[0]).__name__}")


__all__ = ["DataLoader"]

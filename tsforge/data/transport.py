"""Worker transport: how a DataLoader worker hands a whole batch to the main process through
a ring of shared-memory slabs made once.

    layout, nbytes = layout_of(batch)     # (key, dtype, shape, offset) of each tensor
    pack_into(slab, batch, layout)        # in the worker
    batch = unpack(slab, layout)          # in the main process: views of the slab
"""

from __future__ import annotations

import math

import torch

# A DataLoader worker's tensors reach the main process through shared memory: a new segment
# per tensor storage, faulted in page by page on both sides. Measured here that cost several
# times the batch's build, so workers write each batch into one of a ring of shared "slabs"
# made once, and send only (slot, layout, bytes); the main process copies the batch out
# (one memcpy, into pinned memory when asked). The DataLoader keeps at most
# PREFETCH * num_workers batches in flight, so a ring of PREFETCH * num_workers + 2 slabs
# never overwrites a batch before it is copied out.
PREFETCH = 2


def layout_of(batch: dict[str, torch.Tensor]) -> tuple[tuple, int]:
    """((key, dtype, shape, byte offset), ...) of a packed batch, and its bytes."""
    layout, offset = [], 0
    for key, value in batch.items():
        layout.append((key, value.dtype, tuple(value.shape), offset))
        offset += -(-value.numel() * value.element_size() // 8) * 8  # 8-byte aligned
    return tuple(layout), offset


def pack_into(buffer: torch.Tensor, batch: dict[str, torch.Tensor], layout: tuple) -> None:
    for (_, dtype, shape, start), value in zip(layout, batch.values()):
        _view(buffer, dtype, shape, start).copy_(value)


def unpack(buffer: torch.Tensor, layout: tuple) -> dict[str, torch.Tensor]:
    """The batch's tensors, as views of the buffer."""
    return {key: _view(buffer, dtype, shape, start) for key, dtype, shape, start in layout}


def _view(buffer: torch.Tensor, dtype: torch.dtype, shape: tuple, start: int) -> torch.Tensor:
    n = math.prod(shape) * dtype.itemsize
    return buffer[start : start + n].view(dtype).view(shape)


def pack_message(batch: dict[str, torch.Tensor], slabs: torch.Tensor | None, slot: int):
    """In a worker: the batch written into shared slab `slot`, as (slot, layout, bytes); a
    batch that does not fit goes in a buffer of its own (sent as that buffer)."""
    layout, nbytes = layout_of(batch)
    if slabs is not None and nbytes <= slabs.shape[1]:
        pack_into(slabs[slot], batch, layout)
        return slot, layout, nbytes
    buffer = torch.empty(nbytes, dtype=torch.uint8)
    pack_into(buffer, batch, layout)
    return buffer, layout, nbytes


def as_is(message):
    """The DataLoader's collate function: messages need no conversion."""
    return message


class BatchNumbers(torch.utils.data.Sampler):
    """(epoch, batch, slab slot) items from where the loader stands when an iteration starts.

    It holds a small mutable cursor, not the loader: a loader -> DataLoader -> sampler ->
    loader cycle would leave the workers to the garbage collector, which may close their
    queues before telling them to stop (each then idles out its 5 s status timeout).
    """

    def __init__(self, cursor: list[int], ring: int):
        self.cursor = cursor  # [epoch, first batch, batches per epoch]
        self.ring, self.sent = ring, 0

    def __iter__(self):
        epoch, start, stop = self.cursor
        for k in range(start, stop):
            self.sent += 1
            yield epoch, k, self.sent % self.ring

    def __len__(self) -> int:
        return self.cursor[2] - self.cursor[1]

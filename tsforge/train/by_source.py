"""Training metrics per source of a mixture (`data=mixture`): the loss of each source's windows
and the realised mixture, logged as `train/loss/<source>` and `data/share/<source>`.

    by_source = SourceLosses(labels, device)
    by_source.add(loss_fn, y_hat_BHCO, y_BHC, mask_BHC, source_B)    # each training batch
    values = by_source.values(env, loader.shares())                  # at a log step (collective)

A source's loss is the loss function's masked mean over the points of that source's windows
since the last log step, summed over ranks before dividing (so it does not depend on the world
size); a source with no window since then is left out of that log record.

Shape legend: B windows, H horizon, C channels, O outputs per point, S sources.
"""

from __future__ import annotations

import torch

from tsforge.train.distributed import DistEnv, sum_over_ranks


class SourceLosses:
    def __init__(self, labels: list[str], device: torch.device):
        self.labels = list(labels)
        self.sums_S = torch.zeros(2, len(labels), dtype=torch.float64, device=device)

    @torch.no_grad()
    def add(self, loss_fn, y_hat_BHCO, y_BHC, mask_BHC, source_B) -> None:
        """Sums of the elementwise loss and of the mask, per source, of one batch."""
        err = loss_fn.elementwise(y_hat_BHCO.detach().float(), y_BHC.float())
        mask = mask_BHC.to(err.dtype)
        while mask.dim() < err.dim():  # quantile losses: one value per level
            mask = mask.unsqueeze(-1)
        mask = mask.expand_as(err)
        B = err.shape[0]
        per_window = torch.stack([(err * mask).reshape(B, -1).sum(1),
                                  mask.reshape(B, -1).sum(1)]).double()  # fmt: skip
        self.sums_S.index_add_(1, source_B.to(self.sums_S.device).long(), per_window)

    def values(self, env: DistEnv, shares: dict[str, float]) -> dict[str, float]:
        """The log record's per-source values (every rank calls it), and a reset."""
        sums = sum_over_ranks(env, self.sums_S.clone())
        self.sums_S.zero_()
        out = {f"data/share/{label}": share for label, share in shares.items()}
        for label, total, n in zip(self.labels, sums[0].tolist(), sums[1].tolist()):
            if n > 0:
                out[f"train/loss/{label}"] = total / n
        return out

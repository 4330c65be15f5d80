"""Step caching (off by default): skip most of the block stack on steps where it would change little.

Every call runs main block 0 with its control step and injection. Its residual (output - input of the
main stream) is compared with the previous call's; when the relative change is small, blocks 1..39
are skipped and the residual they added on the last computed call — *including the control
injections after blocks 1..11*, since it is measured on the main stream after them — is added
instead. So a cached step never drops the control signal; it reuses the last computed one.

Kinds (our own rules in the spirit of diffusers' FirstBlockCache and of TeaCache, arXiv 2411.19108;
diffusers' hooks are not used because they wrap the main blocks one by one and know nothing of the
control branch that runs between them):

* ``firstblock``: skip when |r0 - r0_prev|_1 / |r0_prev|_1 < threshold (r0_prev from the previous call);
* ``teacache``: accumulate that relative change over skipped calls, compute again once the sum
  reaches the threshold.

The first ``full_first_steps`` calls and the last ``full_last_steps`` are always computed. The skip
decision reads one number from the device per call (a host synchronisation the exact path does not
have); under torch.distributed the numbers are summed over all ranks first so that every rank of a
sequence- or CFG-parallel group decides alike. The benchmark reports speed-up and PSNR against the
exact path (``python -m longvie.benchmark --cache firstblock``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_THRESHOLDS = {"firstblock": 0.05, "teacache": 0.15}


@dataclass
class StepCacheConfig:
    kind: str = "firstblock"
    threshold: float | None = None        # default per kind (DEFAULT_THRESHOLDS)
    full_first_steps: int = 2
    full_last_steps: int = 1

    def __post_init__(self):
        if self.kind not in DEFAULT_THRESHOLDS:
            raise ValueError(f"step cache kind must be one of {sorted(DEFAULT_THRESHOLDS)}, got {self.kind!r}")
        if self.threshold is None:
            self.threshold = DEFAULT_THRESHOLDS[self.kind]


class StepCache:
    """A ``block_stack`` for :meth:`LongVieDenoiser.forward`, one per guidance branch and clip."""

    def __init__(self, config: StepCacheConfig, num_steps: int):
        self.config, self.num_steps = config, num_steps
        self.call = 0
        self.skipped = 0
        self._previous_first = None     # (B, S, dim) residual of block 0 on the previous call
        self._rest = None               # (B, S, dim) residual of blocks 1.. on the last computed call
        self._accumulated = 0.0

    def _relative_change(self, first: torch.Tensor) -> float:
        sums = torch.stack([(first - self._previous_first).abs().sum(), self._previous_first.abs().sum()]).float()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        change, scale = sums.tolist()
        return change / max(scale, 1e-12)

    def _should_skip(self, first: torch.Tensor) -> bool:
        c = self.config
        if self._rest is None or self._previous_first is None or self._rest.shape != first.shape:
            return False
        if self.call < c.full_first_steps or self.call >= self.num_steps - c.full_last_steps:
            return False
        change = self._relative_change(first)
        if c.kind == "firstblock":
            return change < c.threshold
        self._accumulated += change
        if self._accumulated < c.threshold:
            return True
        self._accumulated = 0.0
        return False

    def __call__(self, run, state, num_blocks: int):
        after_first = run(state, 0, 1)
        first = after_first.tokens - state.tokens
        skip = self._should_skip(first)
        self._previous_first = first
        self.call += 1
        if skip:
            self.skipped += 1
            return type(state)(after_first.tokens + self._rest, after_first.dense, after_first.sparse)
        final = run(after_first, 1, num_blocks)
        self._rest = final.tokens - after_first.tokens
        return final


def make_step_cache(config: StepCacheConfig, num_steps: int) -> StepCache:
    return StepCache(config, num_steps)

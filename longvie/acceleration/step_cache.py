"""Step caching (off by default): skip the block stack on denoising steps where it would change little.

A skipped call adds, instead of running the blocks, the residual (output - input of the main token
stream) that the skipped blocks added on the last computed call. The residual is measured on the main
stream *after* the control branch's injections, so a cached step never drops the control signal: it
reuses the last computed one, injections included. Each guidance branch has its own cache (its own
residual and counters), as in TeaCache's and MagCache's reference code (even/odd calls there).

Three kinds, all behind one protocol: a cache is a ``block_stack(run, state, num_blocks)`` for
:meth:`LongVieDenoiser.forward` that calls ``run(state, start, stop)`` for the block ranges it computes
(offload schedulers follow those ranges). The state is handed over: a cache keeps alive only what it
reads later (``firstblock``: block 0's output tokens, not its control streams nor the input tokens;
``run(..., release_input=True)`` frees a state's fields once its first block has read them).

* ``firstblock`` (in the spirit of diffusers' FirstBlockCache): block 0 (with its control step) runs on
  every call; when the relative L1 change of its residual since the previous call is below the threshold,
  blocks 1.. are skipped and their last residual is added. One device->host read per call; under
  torch.distributed the numbers are summed over all ranks first so that every rank decides alike.
* ``teacache``: TeaCache as published for Wan2.1-I2V-14B-480P (Liu et al., "Timestep Embedding Tells:
  It's Time to Cache for Video Diffusion Model", arXiv 2411.19108; reference code
  github.com/ali-vilab/TeaCache, TeaCache4Wan2.1/teacache_generate.py, commit 7c10efc). For Wan, the
  measured tensor is the *timestep* modulation, not the hidden states: with ``use_ret_steps`` (the
  variant whose I2V-480P coefficients are 2.57151496e+05, -3.54229917e+04, 1.40286849e+03,
  -1.35890334e+01, 1.32517977e-01) it is e0 = time_projection(time_embedding(t)), the (6, dim) table
  every block is modulated with, computed in float32; without it, e = time_embedding(t). Per step, the
  relative L1 change |m_n - m_{n-1}|.mean() / |m_{n-1}|.mean() is rescaled with the polynomial
  (numpy.poly1d order, highest power first) and accumulated; while the sum stays below the threshold
  the whole block stack is skipped, otherwise it is computed and the sum restarts at 0. The first
  ``retention`` steps are always computed (5 with ret_steps, 1 without) and, without ret_steps, the last
  step too. Because the measured tensor depends only on the timestep, the whole skip pattern is fixed by
  the schedule: it is computed once per clip (no device->host read per call, identical on every rank).
* ``magcache``: MagCache (Ma et al., "MagCache: Fast Video Generation with Magnitude-Aware Cache",
  arXiv 2506.09045; github.com/Zehong-Ma/MagCache, MagCache4Wan2.1/magcache_generate.py, commit
  df81cb1). Uses the calibrated mean ratio of residual magnitudes between consecutive steps,
  r_n = mean over tokens of ||res_n|| / ||res_{n-1}||: after the first ``retention_ratio`` of the steps,
  the product of the ratios since the last computed step gives an error sum(|1 - prod r|); a step is
  skipped while that sum is below the threshold and at most ``max_skip_steps`` (K) steps in a row are
  skipped. The published ratios for Wan2.1-I2V-14B-480P (plain Wan, 40 steps, shift 3, 832x480) are
  built in and resampled to the run's step count by nearest index as in the reference code; ratios for
  LongVie's own schedule (50 steps, shift 5, control branch on) are recorded from an exact run with
  ``python -m longvie.benchmark --calibrate-magcache FILE`` and used with ``magcache_ratios=FILE``.

TeaCache and MagCache skip all blocks, block 0 included (their published rule decides before any block
runs); ``firstblock`` needs block 0's output and skips blocks 1... The benchmark reports speed-up and PSNR
against the exact path for each kind and threshold (``python -m longvie.benchmark --cache teacache``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

KINDS = ("firstblock", "teacache", "magcache")


# --------------------------------------------------------------------------- published constants
@dataclass(frozen=True)
class TeaCacheVariant:
    """One TeaCache4Wan2.1 setting for Wan2.1-I2V-14B-480P (teacache_generate.py, ``wan_i2v`` branch)."""

    measures: str                      # "t_mod": e0 = time_projection(e), (6, dim); "temb": e = time_embedding(t)
    coefficients: tuple[float, ...]    # rescaling polynomial, highest power first (numpy.poly1d)
    retention_steps: int               # the first steps are always computed (ret_steps = 5*2 / 1*2 calls there)
    final_steps: int                   # the last steps are always computed (cutoff_steps = steps*2 / steps*2 - 2)
    thresholds: tuple[float, ...]      # thresholds the TeaCache4Wan2.1 README publishes for I2V 480P with it


TEACACHE_WAN21_I2V_480P = {
    # --use_ret_steps: README table "Wan2.1 i2v 480p": thresholds 0.20 (slow) and 0.30 (fast).
    "ret_steps": TeaCacheVariant("t_mod", (2.57151496e+05, -3.54229917e+04, 1.40286849e+03, -1.35890334e+01,
                                           1.32517977e-01), retention_steps=5, final_steps=0, thresholds=(0.20, 0.30)),
    # default run: README tables: 0.13, 0.19, 0.26 (~1.6x, 2.0x, 2.5x on an A800 at 832x480).
    "original": TeaCacheVariant("temb", (-3.02331670e+02, 2.23948934e+02, -5.25463970e+01, 5.87348440e+00,
                                         -2.01973289e-01), retention_steps=1, final_steps=1,
                                thresholds=(0.13, 0.19, 0.26)),
}
# The thresholds the benchmark sweeps for ``--cache teacache`` (TeaCache4Wan2.1's I2V-480P latency table).
TEACACHE_THRESHOLDS = (0.13, 0.19, 0.26)

# MagCache4Wan2.1 magcache_generate.py, ``wan_i2v`` with '480P': [1.0]*2 + 78 values, conditional and
# unconditional calls interleaved, calibrated on Wan2.1-I2V-14B-480P with 40 steps, shift 3.0, 832x480.
MAGCACHE_WAN21_I2V_480P = (1.0, 1.0) + (
    0.98783, 0.98993, 0.97559, 0.97593, 0.98311, 0.98319, 0.98202, 0.98225, 0.9888, 0.98878, 0.98762, 0.98759,
    0.98957, 0.98971, 0.99052, 0.99043, 0.99383, 0.99384, 0.98857, 0.9886, 0.99065, 0.99068, 0.98845, 0.98847,
    0.99057, 0.99057, 0.98957, 0.98961, 0.98601, 0.9861, 0.98823, 0.98823, 0.98756, 0.98759, 0.98808, 0.98814,
    0.98721, 0.98724, 0.98571, 0.98572, 0.98543, 0.98544, 0.98157, 0.98165, 0.98411, 0.98413, 0.97952, 0.97953,
    0.98149, 0.9815, 0.9774, 0.97742, 0.97825, 0.97826, 0.97355, 0.97361, 0.97085, 0.97087, 0.97056, 0.97055,
    0.96588, 0.96587, 0.96113, 0.96124, 0.9567, 0.95681, 0.94961, 0.94969, 0.93973, 0.93988, 0.93217, 0.93224,
    0.91878, 0.91896, 0.90955, 0.90954, 0.92617, 0.92616)
MAGCACHE_PUBLISHED = {"source": "MagCache4Wan2.1 (github.com/Zehong-Ma/MagCache @ df81cb1), Wan2.1-I2V-14B-480P",
                      "steps": 40, "shift": 3.0, "cond": list(MAGCACHE_WAN21_I2V_480P[0::2]),
                      "uncond": list(MAGCACHE_WAN21_I2V_480P[1::2])}
# MagCache4Wan2.1 README, I2V 480P command: --magcache_thresh 0.24 --magcache_K 6 --retention_ratio 0.2
# ("E024K6R02"); the script's own defaults are 0.12 / K 2 / 0.2.
MAGCACHE_THRESHOLDS = (0.12, 0.24)
MAGCACHE_RATIOS_FORMAT = "longvie-magcache/1"

DEFAULT_THRESHOLDS = {"firstblock": 0.05, "teacache": 0.20, "magcache": 0.24}


@dataclass
class StepCacheConfig:
    """What to cache and when (see the module docstring).

    Args:
        kind: "firstblock", "teacache" or "magcache".
        threshold: None = the kind's default (``DEFAULT_THRESHOLDS``); 0 never skips.
        full_first_steps, full_last_steps: steps always computed at the start / end; None = per kind
            (firstblock 2 / 1; teacache the variant's 5 / 0 or 1 / 1; magcache ``retention_ratio`` / 0).
        teacache_variant: "ret_steps" (the coefficients above, measures e0) or "original" (measures e).
        magcache_ratios: None = the published Wan2.1-I2V-14B-480P ratios; or a JSON file written by
            ``python -m longvie.benchmark --calibrate-magcache`` (or such a dict).
        max_skip_steps: MagCache's K, most steps skipped in a row.
        retention_ratio: MagCache: fraction of the first steps always computed.
        calibrate: MagCache: compute every step and record the residual magnitude ratios in ``traces``.
    """

    kind: str = "firstblock"
    threshold: float | None = None
    full_first_steps: int | None = None
    full_last_steps: int | None = None
    teacache_variant: str = "ret_steps"
    magcache_ratios: str | Path | dict | None = None
    max_skip_steps: int = 6
    retention_ratio: float = 0.2
    calibrate: bool = False
    # One dict per cache made from this config (clip and guidance branch): decisions and measurements.
    traces: list = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"step cache kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.threshold is None:
            self.threshold = DEFAULT_THRESHOLDS[self.kind]
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not math.isfinite(self.threshold) or self.threshold < 0:
            raise ValueError(f"step cache threshold must be a finite number >= 0, got {self.threshold!r}")
        if self.teacache_variant not in TEACACHE_WAN21_I2V_480P:
            raise ValueError(f"teacache_variant must be one of {sorted(TEACACHE_WAN21_I2V_480P)}, "
                             f"got {self.teacache_variant!r}")
        if not 0 <= self.retention_ratio <= 1:
            raise ValueError(f"retention_ratio must lie in [0, 1], got {self.retention_ratio}")
        if self.max_skip_steps < 0:
            raise ValueError(f"max_skip_steps must be >= 0, got {self.max_skip_steps}")
        if self.calibrate and self.kind != "magcache":
            raise ValueError("calibrate records MagCache's magnitude ratios: use it with kind='magcache'")
        if self.kind == "magcache" and self.magcache_ratios is not None and not isinstance(self.magcache_ratios, dict):
            load_mag_ratios(self.magcache_ratios)  # a bad file fails here, before any model runs

    def steps_always_computed(self, num_steps: int) -> tuple[int, int]:
        """(first, last): how many steps at the start and at the end are never skipped."""
        if self.kind == "firstblock":
            defaults = (2, 1)
        elif self.kind == "teacache":
            variant = TEACACHE_WAN21_I2V_480P[self.teacache_variant]
            defaults = (variant.retention_steps, variant.final_steps)
        else:
            defaults = (int(num_steps * self.retention_ratio), 0)
        first = defaults[0] if self.full_first_steps is None else self.full_first_steps
        last = defaults[1] if self.full_last_steps is None else self.full_last_steps
        return first, last


# --------------------------------------------------------------------------- decision rules
def teacache_decisions(indicator, coefficients, threshold: float, retention_steps: int,
                       final_steps: int = 0) -> tuple[list[bool], list[float]]:
    """TeaCache's skip rule on a trace of relative L1 changes (one per step; entry 0 is not used).

    Returns (skip per step, the accumulated rescaled distance after each step's decision).
    """
    num_steps = len(indicator)
    skips, accumulated, total = [], [], 0.0
    for n, change in enumerate(indicator):
        if n < max(retention_steps, 1) or n >= num_steps - final_steps:
            total, skip = 0.0, False
        else:
            rescaled = 0.0
            for c in coefficients:  # Horner: poly1d(coefficients)(change)
                rescaled = rescaled * change + c
            total += rescaled
            skip = total < threshold
            if not skip:
                total = 0.0
        skips.append(skip)
        accumulated.append(total)
    return skips, accumulated


def magcache_decisions(ratios, threshold: float, max_skip_steps: int, retention_steps: int,
                       final_steps: int = 0) -> tuple[list[bool], list[float]]:
    """MagCache's skip rule on the per-step magnitude ratios (entry n: ||res_n|| / ||res_{n-1}||).

    Returns (skip per step, the accumulated error after each step's decision).
    """
    num_steps = len(ratios)
    skips, errors = [], []
    ratio_product, skipped, error = 1.0, 0, 0.0
    for n, ratio in enumerate(ratios):
        skip = False
        if max(retention_steps, 1) <= n < num_steps - final_steps:
            ratio_product *= ratio
            skipped += 1
            error += abs(1.0 - ratio_product)
            skip = error < threshold and skipped <= max_skip_steps
            if not skip:
                ratio_product, skipped, error = 1.0, 0, 0.0
        skips.append(skip)
        errors.append(error)
    return skips, errors


def nearest_resample(values, length: int) -> list[float]:
    """Resample a per-step list to ``length`` steps by nearest index (MagCache's ``nearest_interp``)."""
    values = list(values)
    if length == len(values):
        return values
    if length == 1:
        return values[-1:]
    scale = (len(values) - 1) / (length - 1)
    return [values[int(round(i * scale))] for i in range(length)]


def load_mag_ratios(source) -> dict:
    """MagCache ratios ``{"cond": [...], "uncond": [...], "steps": N, ...}`` from a JSON file or dict."""
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"MagCache ratios file {path} not found: record one with `python -m longvie.benchmark "
                             "--calibrate-magcache FILE` (or leave it out to use the published ratios)") from None
        except (OSError, ValueError) as err:
            raise ValueError(f"MagCache ratios file {path}: unreadable ({err})") from None
    cond = data.get("cond") if isinstance(data, dict) else None
    if not isinstance(cond, list) or not cond or not all(isinstance(r, (int, float)) and math.isfinite(r) and r > 0
                                                         for r in cond + list(data.get("uncond") or [])):
        raise ValueError(f"MagCache ratios {source}: needs a non-empty 'cond' list of positive numbers "
                         f"(format {MAGCACHE_RATIOS_FORMAT}, written by --calibrate-magcache)")
    return data


@torch.no_grad()
def timestep_modulation(transformer, timesteps: torch.Tensor, measures: str = "t_mod") -> torch.Tensor:
    """What TeaCache4Wan2.1 measures, in float32 as its reference code computes it: (T, 6*dim) e0 =
    time_proj(SiLU(e)) for "t_mod", (T, dim) e = time_embedder(sinusoid(t)) for "temb".

    Computed from the DiT's weights upcast chunk by chunk (the projection is 5120 x 30720 at 14B).
    """
    emb = transformer.condition_embedder
    time_embedder = emb.time_embedder
    device = time_embedder.linear_1.weight.device
    x = emb.timesteps_proj(timesteps.detach().to(device=device, dtype=torch.float32))     # (T, freq_dim)

    def linear(inputs, layer, chunk: int = 4096):
        weight, bias = layer.weight, layer.bias
        if type(weight.data) is not torch.Tensor:  # a quantised tensor subclass: its own forward, then float32
            dtype = bias.dtype if bias is not None else torch.bfloat16
            return layer(inputs.to(dtype)).float()
        parts = [F.linear(inputs, weight[i:i + chunk].float(), None if bias is None else bias[i:i + chunk].float())
                 for i in range(0, weight.shape[0], chunk)]
        return torch.cat(parts, dim=-1)

    e = linear(x, time_embedder.linear_1)
    e = time_embedder.act(e) if time_embedder.act is not None else e
    e = linear(e, time_embedder.linear_2)                                                  # (T, dim)
    if measures == "temb":
        return e
    return linear(emb.act_fn(e), emb.time_proj)                                           # (T, 6*dim)


def relative_l1_trace(values: torch.Tensor) -> list[float]:
    """|v_n - v_{n-1}|.mean() / |v_{n-1}|.mean() per row n >= 1 of a (T, D) tensor; entry 0 is 0."""
    values = values.double()
    change = (values[1:] - values[:-1]).abs().mean(dim=1) / values[:-1].abs().mean(dim=1).clamp_min(1e-30)
    return [0.0] + change.tolist()


WORLD = "world"  # reduce over every rank (the default when no group is given)


def _reduce(tensor: torch.Tensor, group, op=None) -> None:
    """All-reduce ``tensor`` in place over ``group``: ``WORLD`` = every rank when torch.distributed is
    initialised, ``None`` = nothing to agree with (one process, or CFG-parallel ranks without sequence
    parallelism: those compute different guidance branches and must decide on their own, as one
    process does), else a process group (the sequence-parallel group of this rank)."""
    if group is None or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    kwargs = {} if group == WORLD else {"group": group}
    torch.distributed.all_reduce(tensor, op=op or torch.distributed.ReduceOp.SUM, **kwargs)


def _all_ranks_agree(skips: list[bool], device: torch.device, group=WORLD) -> list[bool]:
    """Skip a step only where every rank of ``group`` skips it (ranks of a sequence-parallel group must
    run the same blocks; the plans are equal by construction, this makes it certain)."""
    if group is None or not (torch.distributed.is_available() and torch.distributed.is_initialized()) or not skips:
        return skips
    if torch.distributed.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    flags = torch.tensor([int(s) for s in skips], dtype=torch.int32, device=device)
    _reduce(flags, group, torch.distributed.ReduceOp.MIN)
    return [bool(f) for f in flags.tolist()]


# --------------------------------------------------------------------------- caches
class StepCache:
    """A ``block_stack`` for :meth:`LongVieDenoiser.forward`, one per guidance branch and clip.

    ``skipped`` counts skipped calls; ``trace`` (also appended to ``config.traces``) records per call
    whether it was skipped, and the kind's measurements.
    """

    def __init__(self, config: StepCacheConfig, num_steps: int, branch: str = "cond", group=WORLD):
        self.config, self.num_steps, self.branch, self.group = config, num_steps, branch, group
        self.call = 0
        self.skipped = 0
        self._residual = None          # (B, S, dim) what the skippable blocks added on the last computed call
        self.trace = {"kind": config.kind, "branch": branch, "threshold": config.threshold, "skipped": []}
        config.traces.append(self.trace)

    def _can_reuse(self, tokens: torch.Tensor) -> bool:
        return self._residual is not None and self._residual.shape == tokens.shape

    def __call__(self, run, state, num_blocks: int):
        raise NotImplementedError


class FirstBlockCache(StepCache):
    """``firstblock``: decide from the change of block 0's residual; skip blocks 1.. (see module docstring)."""

    def __init__(self, config: StepCacheConfig, num_steps: int, branch: str = "cond", group=WORLD):
        super().__init__(config, num_steps, branch, group)
        self._previous_first = None     # (B, S, dim) residual of block 0 on the previous call
        self.trace["change"] = []

    def _relative_change(self, first: torch.Tensor) -> float:
        sums = torch.stack([(first - self._previous_first).abs().sum(), self._previous_first.abs().sum()]).float()
        _reduce(sums, self.group)
        change, scale = sums.tolist()
        return change / max(scale, 1e-12)

    def _should_skip(self, first: torch.Tensor) -> bool:
        first_steps, last_steps = self.config.steps_always_computed(self.num_steps)
        if not self._can_reuse(first) or self._previous_first is None:
            return False
        if self.call < first_steps or self.call >= self.num_steps - last_steps:
            return False
        change = self._relative_change(first)
        self.trace["change"].append(change)
        return change < self.config.threshold

    def __call__(self, run, state, num_blocks: int):
        after_first = run(state, 0, 1)
        first = after_first.tokens - state.tokens
        state.tokens = state.dense = state.sparse = None  # handed over: the input tokens are read no more
        skip = self._should_skip(first)
        self._previous_first = first
        self.call += 1
        self.trace["skipped"].append(skip)
        if skip:
            self.skipped += 1
            return type(state)(after_first.tokens + self._residual, after_first.dense, after_first.sparse)
        # Only block 0's output tokens are needed after the stack (for the residual): block 0's control
        # streams are handed over too and die once block 1's control step has read them.
        tokens = after_first.tokens
        final = run(after_first, 1, num_blocks, release_input=True)
        del after_first
        self._residual = final.tokens - tokens
        return final


class ScheduledCache(StepCache):
    """``teacache`` / ``magcache``: a skip plan fixed per clip from the schedule (TeaCache: the timestep
    modulation; MagCache: the calibrated ratios); a skipped call skips every block."""

    def __init__(self, config: StepCacheConfig, num_steps: int, branch: str = "cond", timesteps=None,
                 transformer=None, group=WORLD):
        super().__init__(config, num_steps, branch, group)
        if config.kind == "teacache" and (timesteps is None or transformer is None):
            raise ValueError("a TeaCache step cache needs the clip's timesteps and the DiT (its timestep embedder): "
                             "make_step_cache(config, num_steps, timesteps=..., denoiser=...)")
        if timesteps is not None and len(timesteps) != num_steps:
            raise ValueError(f"{len(timesteps)} timesteps for a {num_steps}-step cache")
        self._timesteps, self._transformer = timesteps, transformer
        self._plan: list[bool] | None = None
        self._previous_norms = None     # MagCache calibration: per-token residual norms of the last call
        self.trace["measured_ratios"] = []

    def plan(self, device=None) -> list[bool]:
        """The skip decision of every step (computed on first use)."""
        if self._plan is not None:
            return self._plan
        c = self.config
        first_steps, last_steps = c.steps_always_computed(self.num_steps)
        if c.calibrate:
            skips = [False] * self.num_steps
        elif c.kind == "teacache":
            variant = TEACACHE_WAN21_I2V_480P[c.teacache_variant]
            values = timestep_modulation(self._transformer, torch.as_tensor(self._timesteps), variant.measures)
            indicator = relative_l1_trace(values)
            skips, accumulated = teacache_decisions(indicator, variant.coefficients, c.threshold, first_steps,
                                                    last_steps)
            self.trace.update(indicator=indicator, accumulated=accumulated)
        else:
            data = MAGCACHE_PUBLISHED if c.magcache_ratios is None else load_mag_ratios(c.magcache_ratios)
            ratios = data.get(self.branch) or data["cond"]
            ratios = nearest_resample(ratios, self.num_steps)
            skips, errors = magcache_decisions(ratios, c.threshold, c.max_skip_steps, first_steps, last_steps)
            self.trace.update(ratios=ratios, accumulated=errors)
        self._plan = _all_ranks_agree(skips, device or torch.device("cpu"), self.group)
        self.trace["plan"] = list(self._plan)
        return self._plan

    def _record_ratio(self, residual: torch.Tensor) -> None:
        """MagCache calibration: mean over tokens of ||res_n|| / ||res_{n-1}|| (1.0 for the first call)."""
        norms = residual.float().norm(dim=-1)                                         # (B, S)
        if self._previous_norms is None or self._previous_norms.shape != norms.shape:
            ratio = 1.0
        else:
            sums = torch.stack([(norms / self._previous_norms).sum(), torch.tensor(float(norms.numel()),
                                                                                  device=norms.device)])
            _reduce(sums, self.group)
            total, count = sums.tolist()
            ratio = total / count
        self._previous_norms = norms
        self.trace["measured_ratios"].append(ratio)

    def __call__(self, run, state, num_blocks: int):
        plan = self.plan(state.tokens.device)
        index = self.call
        self.call += 1
        skip = index < len(plan) and plan[index] and self._can_reuse(state.tokens)
        self.trace["skipped"].append(skip)
        if skip:
            self.skipped += 1
            return type(state)(state.tokens + self._residual, state.dense, state.sparse)
        final = run(state, 0, num_blocks)
        self._residual = final.tokens - state.tokens
        if self.config.calibrate:
            self._record_ratio(self._residual)
        return final


def make_step_cache(config: StepCacheConfig, num_steps: int, timesteps=None, denoiser=None,
                    branch: str = "cond", group=WORLD) -> StepCache:
    """The ``block_stack`` for one guidance branch of one clip.

    Args:
        num_steps: denoising steps of the clip (one call per step in this branch).
        timesteps: (num_steps,) the timesteps as the denoiser receives them (TeaCache).
        denoiser: the :class:`LongVieDenoiser` (TeaCache reads its timestep embedder).
        branch: "cond" or "uncond" (MagCache's calibrated ratios are per branch).
        group: the ranks that must decide alike: ``WORLD`` (every rank), ``None`` (none: one process, or
            CFG-parallel ranks without sequence parallelism) or a process group (the sequence-parallel
            group; its ranks share one denoiser call's tokens).
    """
    if config.kind == "firstblock":
        return FirstBlockCache(config, num_steps, branch, group)
    transformer = getattr(denoiser, "transformer", denoiser)
    return ScheduledCache(config, num_steps, branch, timesteps=timesteps, transformer=transformer, group=group)


def calibration_result(config: StepCacheConfig, num_steps: int, **metadata) -> dict:
    """The MagCache ratios recorded by a ``calibrate=True`` run (its last clip), in the file format
    ``load_mag_ratios`` reads."""
    if not config.calibrate:
        raise ValueError("calibration_result needs a StepCacheConfig(kind='magcache', calibrate=True) that ran")
    result = {"format": MAGCACHE_RATIOS_FORMAT, "steps": num_steps, **metadata}
    for trace in config.traces[::-1]:
        ratios = trace["measured_ratios"]
        if len(ratios) == num_steps and trace["branch"] not in result:
            result[trace["branch"]] = [round(r, 6) for r in ratios]
    if "cond" not in result:
        raise ValueError(f"no complete {num_steps}-step calibration trace was recorded")
    return result

"""Which rank does what when several processes (torchrun) work on long videos.

* One video over N ranks (sequence/CFG parallel): rank 0 alone runs the long-video sampler — it reads
  the inputs, owns the run directory (manifest, clips, log, lock), decides what to resume and prints
  the paths. Every pipeline call it makes goes through :class:`LeaderPipe`, which first broadcasts the
  call (method name and arguments) to the other ranks; they sit in :func:`follow` and make the same
  call, so the collectives inside the pipeline line up. The other ranks never touch the run directory
  and keep no copy of it. Callbacks (the sampler's finite check, progress) run on rank 0 only and may
  not replace the latents.
* Many videos over N ranks (:mod:`longvie.longvideo.batch`): run ``i`` belongs to rank ``i mod N``.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable

LOAD, CALL, METHOD, STOP = "load", "call", "method", "stop"


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed when initialised, else of torchrun's environment, else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard(items: list, rank: int, world: int) -> list:
    """The items of rank ``rank``: every ``world``-th one starting at ``rank`` (disjoint, together complete)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    return items[rank::world]


def parallel_run_problems(sequence_degree: int, cfg_degree: int, world_size: int, sampling: dict | None,
                          device: str, attention_backend: str | None = None) -> list[str]:
    """Why ``--sp``/``--cfg-parallel`` cannot run under this torchrun (one sentence each), known before any
    model loads: the process count, the clip's token count (``sampling``: the run's flattened sampling
    settings, None when they are invalid anyway), CFG-parallel without guidance, the attention backend
    and, on CUDA, a ``LOCAL_RANK`` beyond the visible GPUs."""
    import torch

    from ..acceleration.parallel import clip_token_counts, local_rank_problem, parallel_problems

    clip_tokens = guidance = None
    if sampling is not None:
        clip_tokens, _ = clip_token_counts(sampling["num_frames"], sampling["height"], sampling["width"],
                                           sampling.get("history_frames", 8))
        guidance = sampling.get("cfg")
    problems = parallel_problems(sequence_degree, cfg_degree, world_size=world_size, clip_tokens=clip_tokens,
                                 guidance_scale=guidance, attention_backend=attention_backend)
    if torch.device(device).type == "cuda":
        problem = local_rank_problem()
        if problem:
            problems.append(problem)
    return problems


def end_distributed() -> None:
    """Leave the process group (after :func:`follow` returned, or after rank 0's :meth:`Leader.stop`)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _send(message: tuple) -> None:
    import torch.distributed as dist

    dist.broadcast_object_list([message], src=0)


def _receive() -> tuple:
    import torch.distributed as dist

    box = [None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _shippable(kwargs: dict) -> dict:
    """The arguments the other ranks get: everything but callables (callbacks run on rank 0 only)."""
    return {k: v for k, v in kwargs.items() if not callable(v)}


def _guard_callback(callback: Callable) -> Callable:
    def guarded(pipe, step, timestep, tensors):
        update = callback(pipe, step, timestep, tensors)
        if update and "latents" in update:
            raise RuntimeError("a step callback replaced the latents on rank 0 only; under torchrun every rank must "
                               "keep the same latents, so callbacks may only read them")
        return update

    return guarded


class LeaderPipe:
    """Rank 0's handle on the pipeline: calling it, or calling one of its methods, first sends the call to
    the ranks in :func:`follow`. Attribute reads are local. ``inspect.signature`` sees the pipeline's."""

    def __init__(self, pipe: Any):
        self._pipe = pipe
        self.__signature__ = inspect.signature(pipe)
        self.in_call = False  # True while a call runs: a failure there leaves the other ranks in a collective

    def __getattr__(self, name: str):
        value = getattr(self._pipe, name)
        if not inspect.ismethod(value):
            return value

        def mirrored(*args, **kwargs):
            _send((METHOD, name, args, _shippable(kwargs)))
            self.in_call = True
            result = value(*args, **kwargs)
            self.in_call = False
            return result

        return mirrored

    def __call__(self, *args, **kwargs):
        _send((CALL, args, _shippable(kwargs)))
        if kwargs.get("callback_on_step_end") is not None:
            kwargs["callback_on_step_end"] = _guard_callback(kwargs["callback_on_step_end"])
        self.in_call = True
        result = self._pipe(*args, **kwargs)
        self.in_call = False
        return result


class Leader:
    """Rank 0's side: ``load`` (give it to the sampler as ``load_pipe``) loads the pipeline on every rank and
    returns a :class:`LeaderPipe`; ``stop`` releases the other ranks (call it in a ``finally``)."""

    def __init__(self, load_pipe: Callable[[], Any]):
        self._load_pipe = load_pipe
        self.pipe: LeaderPipe | None = None
        self.stopped = False

    def load(self) -> LeaderPipe:
        _send((LOAD,))
        self.pipe = LeaderPipe(self._load_pipe())
        return self.pipe

    def stop(self) -> bool:
        """Tell the other ranks to return from :func:`follow`. Skipped (False) when a call failed half way:
        the other ranks are then inside one of its collectives and torchrun stops them when rank 0 exits."""
        if self.stopped or (self.pipe is not None and self.pipe.in_call):
            return False
        _send((STOP,))
        self.stopped = True
        return True


def follow(load_pipe: Callable[[], Any]) -> int:
    """The other ranks' side: make rank 0's pipeline calls until it says stop. Returns the number of calls."""
    pipe, calls = None, 0
    while True:
        kind, *rest = _receive()
        if kind == STOP:
            return calls
        if kind == LOAD:
            pipe = load_pipe()
        elif kind == METHOD:
            name, args, kwargs = rest
            getattr(pipe, name)(*args, **kwargs)
        elif kind == CALL:
            args, kwargs = rest
            pipe(*args, **{**kwargs, "progress": False})
            calls += 1
        else:
            raise RuntimeError(f"unknown message from rank 0: {kind!r}")

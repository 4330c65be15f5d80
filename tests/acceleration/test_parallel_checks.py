"""Multi-GPU sampling without torchrun: every refusal comes before any model loads (rank count, token count,
guidance, backend, LOCAL_RANK), the token split and task assignment, the tiled-decode replay, rank 0's
pipeline handle, and umT5 leaving memory once the prompts are cached."""
from __future__ import annotations

import gc
import inspect
import weakref

import numpy as np
import pytest
import torch

from longvie.acceleration import parallel
from longvie.acceleration.parallel import (
    assign_tasks,
    clip_token_counts,
    local_rank_problem,
    makespan,
    parallel_problems,
    sequence_parallel_backend_support,
    split_sizes,
)


def test_split_sizes_cover_every_token_once():
    for count in (56, 84, 1760, 18480, 5):
        for parts in (1, 2, 3, 6, 7, 8):
            sizes = split_sizes(count, parts)
            assert sum(sizes) == count and max(sizes) - min(sizes) <= (count % parts != 0)
            assert sizes == tuple(len(t) for t in torch.arange(count).tensor_split(parts))
    assert clip_token_counts(81, 352, 640) == (21 * 22 * 40, 2 * 22 * 40)   # 18,480 clip, 1,760 history
    assert clip_token_counts(9, 64, 112) == (84, 56)                         # the tiny preset


def test_task_assignment_biggest_first_least_loaded():
    costs = [81, 81, 81, 81, 81, 8, 1, 1]
    owners = assign_tasks(costs, 2, [None] * 7 + [(0,)])
    assert owners == [0, 1, 0, 1, 0, 1, 1, 0]  # by hand: 81s alternate, 8 and 1 go to rank 1 (162 < 243)
    assert makespan(costs, 2) == 243  # rank 0: three 81s; rank 1: two 81s, 8, 1, 1 (172)
    assert makespan(costs, 8) == 81 and makespan(costs, 1) == sum(costs)
    assert makespan([5.0], 4, [(2,)]) == 5.0 and assign_tasks([5.0], 4, [(2,)]) == [2]


def test_parallel_problems_one_sentence_each():
    assert parallel_problems(3, 1, world_size=3, clip_tokens=84, guidance_scale=5.0, attention_backend="native") == []
    (wrong_world,) = parallel_problems(3, 1, world_size=2)
    assert "needs 3 processes, torchrun started 2" in wrong_world and "--nproc_per_node 3" in wrong_world
    (alone,) = parallel_problems(2, 1, world_size=1)
    assert "this is one process" in alone
    (tokens,) = parallel_problems(100, 1, world_size=100, clip_tokens=84)
    assert "only 84 tokens" in tokens
    (guidance,) = parallel_problems(1, 2, world_size=2, guidance_scale=1.0)
    assert "--cfg-parallel" in guidance and "--cfg 1.0" in guidance
    (backend,) = parallel_problems(2, 1, world_size=2, attention_backend="_native_xla")
    assert "_native_xla" in backend


def test_every_backend_diffusers_runs_is_served():
    """Backends diffusers cannot run context-parallel (_flash_3, _native_math) go through LongVie's all-to-all
    (tested over gloo in test_parallel.py); unknown and other-device backends are refused."""
    for name in ("native", "flash", "sage", "_flash_3", "_native_math", "auto", None):
        assert sequence_parallel_backend_support(name)[0], name
    assert "LongVie's all-to-all" in sequence_parallel_backend_support("_flash_3")[1]
    assert not sequence_parallel_backend_support("no_such_backend")[0]
    assert not sequence_parallel_backend_support("_native_npu")[0]


def test_local_rank_beyond_visible_gpus(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    problem = local_rank_problem(device_count=2)
    assert problem.startswith("LOCAL_RANK=3 but this machine shows only 2 GPU(s) (CUDA_VISIBLE_DEVICES=0,1)")
    assert "--nproc_per_node 2" in problem
    assert local_rank_problem(device_count=4) is None
    # init_distributed says it before any process group exists
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **k: pytest.fail("group created"))
    with pytest.raises(ValueError, match="LOCAL_RANK=3 but this machine shows only 2 GPU"):
        parallel.init_distributed("cuda")


@pytest.fixture
def no_loading(monkeypatch):
    """Any model load fails the test: refusals must come first."""
    from longvie.sampling import pipeline

    def refuse(*args, **kwargs):
        pytest.fail("a model was loaded before the refusal")

    monkeypatch.setattr(pipeline.LongViePipeline, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr("longvie.weights.loading.load_base_components", refuse)


@pytest.mark.parametrize("world, rank, extra, expected", [
    ("2", "0", ["--sp", "3"], "--sp 3 needs 3 processes, torchrun started 2"),
    ("2", "0", ["--cfg-parallel", "--cfg", "1.0"], "--cfg-parallel puts the two guidance branches"),
    ("2", "0", ["--sp", "2", "--device", "cuda"], "LOCAL_RANK=3 but this machine shows only"),
    ("100", "0", ["--sp", "100"], "a clip has only 84 tokens"),
    # --split-gpus (sample_longvideo.sh --gpus N): guidance off -> sequence parallel over all N ranks;
    # guidance on and N even -> CFG-parallel x N/2
    ("100", "0", ["--split-gpus", "--cfg", "1.0"], "--sp 100"),
    ("200", "0", ["--split-gpus", "--cfg", "5.0"], "--sp 100"),
    ("2", "0", ["--split-gpus", "--sp", "2"], "--split-gpus chooses --sp and --cfg-parallel itself"),
])
def test_sample_cli_refuses_before_loading(tmp_path, monkeypatch, capsys, no_loading, world, rank, extra, expected):
    from longvie.longvideo.cli import main

    monkeypatch.setenv("LONGVIE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("LOCAL_RANK", "3")
    code = main(["--preset", "tiny", "--clips", "1", "--steps", "1", "--no-progress", "--out", str(tmp_path / "run"),
                 *extra])
    assert code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_sample_cli_other_ranks_stay_quiet(tmp_path, monkeypatch, capsys, no_loading):
    """Every rank validates the same inputs; only rank 0 prints the (identical) error."""
    from longvie.longvideo.cli import main

    monkeypatch.setenv("LONGVIE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["--preset", "tiny", "--sp", "3", "--no-progress", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == ""


def test_python_api_refuses_before_loading(tiny_checkpoints, monkeypatch):
    from longvie.sampling.pipeline import LongViePipeline

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr("longvie.weights.loading.load_base_components",
                        lambda *a, **k: pytest.fail("loaded before the refusal"))
    with pytest.raises(ValueError, match="--sp 2 needs 2 processes, this is one process"):
        LongViePipeline.from_pretrained(*tiny_checkpoints, torch_dtype=torch.float32, device="cpu", sequence_degree=2)
    with pytest.raises(ValueError, match="cannot run here"):
        LongViePipeline.from_pretrained(*tiny_checkpoints, torch_dtype=torch.float32, device="cpu",
                                        attention_backend="no_such_backend", sequence_degree=2)


def test_tiled_decode_replay_equals_diffusers_tiled_decode(tiny_pipeline):
    """The tiles decoded one by one (on any rank) and assembled by diffusers' own tiled decode give exactly
    ``vae.decode``'s tiled result; without tiling there is nothing to split."""
    from longvie.acceleration.parallel import assemble_tiles, decode_tile, decode_tiles

    vae = tiny_pipeline.vae
    z = torch.randn(1, 16, 3, 8, 14, generator=torch.Generator().manual_seed(0))
    assert decode_tiles(vae, z) is None  # tiling off
    vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=24,
                      tile_sample_stride_width=24)
    try:
        tiles = decode_tiles(vae, z)
        assert len(tiles) == 3 * 5 and sum(t.area for t in tiles) > 8 * 14
        with torch.no_grad():
            expected = vae.decode(z).sample
            got = assemble_tiles(vae, z, tiles, [decode_tile(vae, z, t) for t in reversed(tiles)][::-1])
        assert torch.equal(got, expected)
        assert isinstance(vae.decoder, torch.nn.Module) and type(vae.decoder).__name__ != "_ReplayDecoder"
    finally:
        vae.disable_tiling()


@pytest.fixture
def one_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_leader_pipe_mirrors_calls_and_guards_callbacks(one_process_group):
    from longvie.longvideo.ranks import Leader

    calls = []

    class Pipe:
        def __call__(self, image, prompt, callback_on_step_end=None, progress=True):
            calls.append((image, prompt))
            if callback_on_step_end is not None:
                callback_on_step_end(self, 0, 1.0, {"latents": torch.zeros(1)})
            return "frames"

        def set_vae_tiling(self, enabled):
            calls.append(("tiling", enabled))

    leader = Leader(Pipe)
    pipe = leader.load()
    assert "callback_on_step_end" in inspect.signature(pipe).parameters  # the sampler looks for it
    assert pipe("img", "a prompt", callback_on_step_end=lambda *a: None) == "frames"
    pipe.set_vae_tiling(True)
    assert calls == [("img", "a prompt"), ("tiling", True)]
    with pytest.raises(RuntimeError, match="may only read them"):
        pipe("img", "p", callback_on_step_end=lambda p, s, t, d: {"latents": d["latents"] + 1})
    assert not leader.stop(), "a call failed half way: the other ranks are in its collectives, no stop message"
    pipe.in_call = False
    assert leader.stop() and not leader.stop()


def test_umt5_leaves_memory_once_prompts_are_cached(tiny_checkpoints):
    from longvie.sampling.pipeline import LongViePipeline

    pipe = LongViePipeline.from_pretrained(*tiny_checkpoints, torch_dtype=torch.float32, device="cpu")
    pipe.enable_model_cpu_offload(device="cpu")  # diffusers' offload chain holds every model: it must let go too
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (9, 64, 112, 3), dtype=np.uint8)
    kwargs = dict(image=video[0], dense_video=video, sparse_video=video[::-1].copy(), num_frames=9, height=64,
                  width=112, num_inference_steps=1, progress=False, guidance_scale=1.0)
    before, _ = pipe(prompt="a cached prompt", **kwargs)
    fresh = pipe._prompt_embeddings(["a new prompt"], "cpu", torch.float32)
    umt5 = weakref.ref(pipe.text_encoder)
    assert pipe.cache_prompts(["a cached prompt", "a cached prompt"], release_text_encoder=True) == 1
    gc.collect()
    assert pipe.text_encoder is None and umt5() is None, "umT5 is gone from memory"
    after, _ = pipe(prompt="a cached prompt", **kwargs)
    assert np.array_equal(before, after)
    # a prompt that was not cached: umT5 loaded again for that call only, same embeddings
    assert torch.equal(pipe._prompt_embeddings(["a new prompt"], "cpu", torch.float32), fresh)
    assert pipe.text_encoder is None

"""download_wan2.1.py: plan, completeness checks and hub calls, with huggingface_hub monkeypatched
(nothing here touches the network)."""
from __future__ import annotations

import fnmatch
import importlib.util
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest

from longvie.presets.tiny import write_tiny_original_checkpoints
from longvie.weights.files import diffusers_layout_problems, longvie_folder_problems, original_layout_problems

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location("download_wan21", REPO_ROOT / "download_wan2.1.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


import longvie.weights.download as dl  # noqa: E402


def test_root_script_is_a_thin_entry_point():
    script = _load_script()
    assert script.main is dl.main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "tiny_weight_layouts"
    original, longvie = write_tiny_original_checkpoints(root)
    return SimpleNamespace(original=original, diffusers=root / "Wan2.1-I2V-tiny-Diffusers", longvie=longvie)


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


class FakeHub:
    """Stands in for huggingface_hub: serves repo files from local folders and records the calls."""

    def __init__(self, repos: dict[str, Path], fail: dict[str, Exception] | None = None, sizes: dict | None = None):
        self.repos, self.fail, self.sizes, self.calls = repos, fail or {}, sizes or {}, []

    def _check(self, repo_id):
        if repo_id in self.fail:
            raise self.fail[repo_id]

    def model_info(self, repo_id, files_metadata=False):
        self.calls.append(("model_info", repo_id))
        self._check(repo_id)
        siblings = [SimpleNamespace(rfilename=rel, size=self.sizes.get(rel, path.stat().st_size))
                    for rel, path in _files(self.repos[repo_id]).items()]
        return SimpleNamespace(siblings=siblings)

    def snapshot_download(self, repo_id, local_dir, allow_patterns=None, token=None, **kwargs):
        self.calls.append(("snapshot_download", repo_id, tuple(allow_patterns or ())))
        self._check(repo_id)
        for rel, path in _files(self.repos[repo_id]).items():
            if any(fnmatch.fnmatch(rel, p) for p in allow_patterns or ["*"]):
                (Path(local_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, Path(local_dir) / rel)
        return local_dir

    def hf_hub_download(self, repo_id, filename, local_dir, token=None, **kwargs):
        self.calls.append(("hf_hub_download", repo_id, filename))
        self._check(repo_id)
        dest = Path(local_dir) / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(_files(self.repos[repo_id])[filename], dest)
        return str(dest)

    def install(self, monkeypatch):
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", self.hf_hub_download)
        monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: SimpleNamespace(model_info=self.model_info))
        return self


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")
    for name in ("snapshot_download", "hf_hub_download", "HfApi"):
        monkeypatch.setattr(huggingface_hub, name, refuse)


# --------------------------------------------------------------------------- plan and checks
def test_dry_run_prints_plan_and_config_lines_without_network(no_network, tmp_path, capsys):
    assert dl.main(["--dry-run", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "repo Wan-AI/Wan2.1-I2V-14B-480P-Diffusers" in out and "repo Vchitect/LongVie2" in out
    assert "files control.safetensors, dit.safetensors" in out and "transformer/*" in out
    assert f"-> {tmp_path}/Wan2.1-I2V-14B-480P-Diffusers" in out and f"-> {tmp_path}/LongVie2" in out
    assert f"base_model_dir: {tmp_path}/Wan2.1-I2V-14B-480P-Diffusers" in out
    assert f"longvie_dir: {tmp_path}/LongVie2" in out

    assert dl.main(["--dry-run", "--layout", "original", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "repo Wan-AI/Wan2.1-I2V-14B-480P\n" in out and "models_t5_umt5-xxl-enc-bf16.pth" in out
    assert f"base_model_dir: {tmp_path}/Wan2.1-I2V-14B-480P\n" in out


def test_default_targets_are_under_models_and_match_the_config():
    args = dl.parse_args([])
    assert dl.config_path_text(dl.base_dir_of(args)) == "models/Wan2.1-I2V-14B-480P-Diffusers"
    assert dl.config_path_text(dl.longvie_dir_of(args)) == "models/LongVie2"
    config = (REPO_ROOT / "configs/longvie2_i2v_14b.yaml").read_text()
    assert "base_model_dir: models/Wan2.1-I2V-14B-480P-Diffusers" in config and "longvie_dir: models/LongVie2" in config


def test_completeness_checker_accepts_complete_tiny_folders(tiny):
    assert original_layout_problems(tiny.original) == []
    assert diffusers_layout_problems(tiny.diffusers) == []
    assert longvie_folder_problems(tiny.longvie) == []


def test_completeness_checker_reports_missing_and_truncated_files(tiny, tmp_path):
    original = Path(shutil.copytree(tiny.original, tmp_path / "orig"))
    (original / "diffusion_pytorch_model-00005-of-00007.safetensors").unlink()
    shard = original / "diffusion_pytorch_model-00001-of-00007.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    (original / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth").unlink()
    problems = "\n".join(original_layout_problems(original))
    assert "missing shard" in problems and "diffusion_pytorch_model-00005-of-00007.safetensors" in problems
    assert f"{shard}: truncated" in problems
    assert "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth: file not found" in problems

    diffusers = Path(shutil.copytree(tiny.diffusers, tmp_path / "diff"))
    victim = sorted((diffusers / "transformer").glob("*.safetensors"))[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    shutil.rmtree(diffusers / "tokenizer")
    problems = "\n".join(diffusers_layout_problems(diffusers))
    assert f"{victim}: truncated" in problems and "tokenizer: missing" in problems


def test_check_only_exit_codes(tiny, tmp_path, capsys, no_network):
    args = ["--check-only", "--layout", "original", "--base-dir", str(tiny.original), "--longvie-dir",
            str(tiny.longvie)]
    assert dl.main(args) == 0
    out = capsys.readouterr().out
    assert f"base_model_dir: {tiny.original}" in out and f"longvie_dir: {tiny.longvie}" in out
    longvie = Path(shutil.copytree(tiny.longvie, tmp_path / "lv"))
    (longvie / "dit.safetensors").unlink()
    assert dl.main(args[:-1] + [str(longvie)]) == 1
    assert "INCOMPLETE LongVie 2 weights" in capsys.readouterr().out


def test_check_only_deep_finds_nonfinite_tensors_and_incomplete_prints_no_config(tiny, tmp_path, capsys,
                                                                                  no_network):
    import torch
    from safetensors.torch import load_file, save_file

    args = ["--check-only", "--deep", "--layout", "original", "--base-dir", str(tiny.original)]
    assert dl.main([*args, "--longvie-dir", str(tiny.longvie)]) == 0
    assert "complete (every tensor finite): LongVie 2 weights" in capsys.readouterr().out
    longvie = Path(shutil.copytree(tiny.longvie, tmp_path / "lv"))
    tensors = load_file(longvie / "control.safetensors")
    name = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
    tensors[name] = tensors[name].clone().view(-1).index_fill(0, torch.tensor([0]), float("nan")).view_as(tensors[name])
    save_file(tensors, longvie / "control.safetensors")
    shallow = [a for a in args if a != "--deep"] + ["--longvie-dir", str(longvie)]
    assert dl.main(shallow) == 0  # same size, valid header: only the deep scan can tell
    capsys.readouterr()
    assert dl.main([*args, "--longvie-dir", str(longvie)]) == 1
    out = capsys.readouterr().out
    assert f"{longvie / 'control.safetensors'}: 1 of" in out and "NaN or infinite" in out and name in out
    assert "base_model_dir:" not in out and "longvie_dir:" not in out  # no config lines for an incomplete folder


# --------------------------------------------------------------------------- downloads (mocked hub)
def test_download_original_layout_with_mocked_hub(tiny, tmp_path, capsys, monkeypatch):
    hub = FakeHub({"Wan-AI/Wan2.1-I2V-14B-480P": tiny.original, "Vchitect/LongVie2": tiny.longvie}).install(monkeypatch)
    assert dl.main(["--layout", "original", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ("snapshot_download", "Wan-AI/Wan2.1-I2V-14B-480P", tuple(dl.BASE_PATTERNS["original"])) in hub.calls
    assert ("hf_hub_download", "Vchitect/LongVie2", "control.safetensors") in hub.calls
    assert f"complete: Wan2.1-I2V-14B-480P base model, original layout in {tmp_path}/Wan2.1-I2V-14B-480P" in out
    assert f"base_model_dir: {tmp_path}/Wan2.1-I2V-14B-480P\nlongvie_dir: {tmp_path}/LongVie2" in out
    assert original_layout_problems(tmp_path / "Wan2.1-I2V-14B-480P") == []

    # a second run finds everything complete and does not touch the hub (so it also works offline)
    hub.calls.clear()
    assert dl.main(["--layout", "original", "--output", str(tmp_path)]) == 0
    assert hub.calls == [] and "already complete: LongVie 2 weights" in capsys.readouterr().out

    # a lost file is fetched again, and only that one
    (tmp_path / "LongVie2/dit.safetensors").unlink()
    assert dl.main(["--layout", "original", "--output", str(tmp_path)]) == 0
    assert [c for c in hub.calls if c[0] == "hf_hub_download"] == [("hf_hub_download", "Vchitect/LongVie2",
                                                                    "dit.safetensors")]


def test_download_reports_size_mismatch_with_the_hub(tiny, tmp_path, capsys, monkeypatch):
    FakeHub({"Wan-AI/Wan2.1-I2V-14B-480P-Diffusers": tiny.diffusers, "Vchitect/LongVie2": tiny.longvie},
            sizes={"dit.safetensors": 10**9}).install(monkeypatch)
    assert dl.main(["--output", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path}/LongVie2/dit.safetensors: " in out and "the Hub says 1,000,000,000" in out


def test_longvie_files_in_a_subfolder_are_placed_at_the_top(tiny, tmp_path, capsys, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "weights").mkdir(parents=True)
    for name in ("control.safetensors", "dit.safetensors"):
        shutil.copy(tiny.longvie / name, repo / "weights" / name)
    FakeHub({"Vchitect/LongVie2": repo}).install(monkeypatch)
    assert dl.main(["--skip-base", "--output", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert "has no file(s) ['control.safetensors', 'dit.safetensors']" in err and "weights/control.safetensors" in err
    assert dl.main(["--skip-base", "--output", str(tmp_path / "models"), "--longvie-files",
                    "weights/control.safetensors", "weights/dit.safetensors"]) == 0
    assert longvie_folder_problems(tmp_path / "models/LongVie2") == []


def test_offline_error_explains_the_hand_download(tiny, tmp_path, capsys, monkeypatch):
    offline = huggingface_hub.errors.LocalEntryNotFoundError("cannot reach huggingface.co")
    FakeHub({}, fail={"Wan-AI/Wan2.1-I2V-14B-480P": offline}).install(monkeypatch)
    assert dl.main(["--layout", "original", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Could not download Wan2.1-I2V-14B-480P base model, original layout (LocalEntryNotFoundError" in err
    assert "https://huggingface.co/Wan-AI/Wan2.1-I2V-14B-480P" in err and "Wan2.1_VAE.pth" in err
    assert f"into:   {tmp_path}/Wan2.1-I2V-14B-480P/" in err and "hf download Wan-AI/Wan2.1-I2V-14B-480P" in err

    FakeHub({"Wan-AI/Wan2.1-I2V-14B-480P": tiny.original},
            fail={"Vchitect/LongVie2": ConnectionError("network is unreachable")}).install(monkeypatch)
    assert dl.main(["--layout", "original", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "https://huggingface.co/Vchitect/LongVie2" in err and "control.safetensors" in err
    assert "dit.safetensors" in err and f"into:   {tmp_path}/LongVie2/" in err


def test_modelscope_source_uses_modelscope_snapshot_download(tiny, tmp_path, capsys, monkeypatch):
    hub = FakeHub({"Wan-AI/Wan2.1-I2V-14B-480P-Diffusers": tiny.diffusers})
    monkeypatch.setitem(sys.modules, "modelscope", SimpleNamespace(snapshot_download=hub.snapshot_download))
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: pytest.fail("Hugging Face used for ModelScope"))
    assert dl.main(["--source", "modelscope", "--skip-longvie", "--output", str(tmp_path)]) == 0
    assert hub.calls == [("snapshot_download", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
                          tuple(dl.BASE_PATTERNS["diffusers"]))]
    assert diffusers_layout_problems(tmp_path / "Wan2.1-I2V-14B-480P-Diffusers") == []


@pytest.mark.parametrize("mode", [["--check-only"], ["--dry-run"], []], ids=["check-only", "dry-run", "download"])
def test_a_file_given_as_a_folder_is_called_a_file(tmp_path, capsys, no_network, mode):
    """issue 19: `--check-only` on a file path says it is a file (exit 2, one line per option, nothing written)."""
    weights = tmp_path / "control.safetensors"
    weights.write_bytes(b"my weights")
    for flag in ("--base-dir", "--longvie-dir", "--output"):
        assert dl.main([*mode, flag, str(weights)]) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0] == (f"error: {flag} {weights} is a file, not a folder; {flag} names the "
                                                 "folder the weights are (or will be) in — give that folder"), err
    assert dl.main([*mode, "--longvie-dir", str(weights / "LongVie2")]) == 2
    assert "is a file, so this folder cannot exist" in capsys.readouterr().err
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "LongVie2").write_text("not a folder")  # the default target under --output
    assert dl.main([*mode, "--output", str(tmp_path / "models"), "--skip-base"]) == 2
    assert "LongVie2 (LongVie 2 weights) is a file, not a folder" in capsys.readouterr().err
    assert weights.read_bytes() == b"my weights" and sorted(p.name for p in tmp_path.iterdir()) == [
        "control.safetensors", "models"]

"""Small helpers shared by the model-backed extractors: device choice and hub-loading errors."""
from __future__ import annotations


def pick_device(device: str | None = None):
    """``device`` (a torch.device) when given, else the first CUDA GPU when there is one, else the CPU."""
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def dtype_kwargs(dtype) -> dict:
    """``from_pretrained`` keyword for the weights' dtype (``dtype`` since transformers 4.56, before
    that ``torch_dtype``)."""
    import transformers
    from packaging.version import Version

    name = "dtype" if Version(transformers.__version__.split(".dev")[0]) >= Version("4.56") else "torch_dtype"
    return {name: dtype}


def from_pretrained_or_explain(loader, model_id: str, what: str, local_files_only: bool = False, **kwargs):
    """``loader.from_pretrained(model_id, ...)`` with an error that says how to get the weights.

    Raises:
        RuntimeError: the weights are neither local nor downloadable (names ``model_id`` and the fix).
    """
    try:
        return loader.from_pretrained(model_id, local_files_only=local_files_only, **kwargs)
    except (OSError, ValueError) as err:
        raise RuntimeError(
            f"cannot load {what} '{model_id}' ({err}). Either give a local directory holding the model "
            f"(config.json + weights), or run once with internet access so the Hugging Face hub can "
            f"download it (then it is cached; add --local-files to forbid further downloads)."
        ) from err

"""Install LongVie 2: `pip install -e .` (CPU-only machines included).

GPU-only accelerators (flash-attn, deepspeed) are optional extras:
`pip install -e .[gpu]`; without them attention uses PyTorch SDPA and
training uses plain accelerate/DDP.
"""
from setuptools import find_packages, setup

setup(
    name="longvie",
    version="0.1.0",
    description="LongVie 2: controllable ultra-long video generation on Wan2.1-I2V-14B (diffusers)",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["longvie", "longvie.*"]),
    include_package_data=True,
    install_requires=[
        # Lower bounds are versions the test suite passed with: the newest set (torch 2.14.1,
        # diffusers 0.42.1, transformers 5.24.0, accelerate 1.15.0, huggingface_hub 2.4.0) and an
        # older set (torch 2.13.0, diffusers 0.36.0, transformers 4.57.1, accelerate 1.10.1,
        # huggingface_hub 0.36.2). torchvision is needed by transformers' Qwen2.5-VL video processor
        # and the evaluation's RAFT / AlexNet. Its bound is the release paired with torch's bound
        # (torch 2.13 <-> torchvision 0.28, 2.14 <-> 0.29: torchvision 0.28.0 requires torch==2.13.0):
        # a CPU pair from https://download.pytorch.org/whl/cpu installed first is kept as it is, instead of
        # torchvision being upgraded and pulling a CUDA torch build from PyPI (issue 19; docs/install.md).
        "torch>=2.13",
        "torchvision>=0.28",
        "diffusers>=0.36",
        "transformers>=4.57.1",
        "accelerate>=1.10.1",
        # LoRAs (longvie/weights/lora.py): diffusers' LoRA loading runs on PEFT. Tested with peft 0.21.2.
        "peft>=0.21.2",
        "safetensors>=0.8",
        "huggingface_hub>=0.36.2",
        "tokenizers>=0.22",
        # Prompt cleaning as Wan2.1 / upstream (ftfy.fix_text); the cleaning tests pass with 6.0 and 6.3.1.
        "ftfy>=6.0",
        "sentencepiece>=0.2.3",
        "protobuf>=7",
        "numpy>=2.4",
        "pillow>=12.3",  # gradio (the app) caps pillow below 13
        "pyyaml>=6.0.3",
        "tqdm>=4.70",
        "imageio>=2.38",
        "imageio-ffmpeg>=0.8.1",
        "av>=18",
        "decord>=0.6; platform_machine=='x86_64' and platform_system=='Linux'",
        "opencv-python-headless>=5.0",
        "tensorboard>=2.21",
        "psutil>=7.2",
        "pytest>=9.0",
        # The web app (python -m longvie.app) and its browser test (playwright drives the system
        # Chromium through executable_path; no browser download). Tested: gradio 6.31.0, playwright 1.65.2.
        "gradio>=6.31",
        "playwright>=1.65",
        # evaluation (longvie/eval): plots, and LPIPS (its calibrated heads ship in the package; scipy is
        # its dependency and the SSIM test's reference). Tested with matplotlib 3.11.2, lpips 0.1.4,
        # scipy 1.17.1. pyiqa (MUSIQ for I.Q.) is optional and not listed: it pulls opencv-python
        # beside opencv-python-headless, numba, datasets, ...; without it I.Q. is "not computed".
        "matplotlib>=3.11",
        "lpips>=0.1.4",
        "scipy>=1.17",
        # camera paths (longvie/camera): unprojection and projection through kornia's camera geometry;
        # tested with kornia 0.9.0.
        "kornia>=0.9.0",
    ],
    extras_require={
        "gpu": ["flash-attn>=2.6.3", "deepspeed>=0.15"],  # flash-attn 2.6.3: the oldest diffusers accepts
        "modelscope": ["modelscope>=1.40"],
    },
    entry_points={"console_scripts": ["longvie-sample=longvie.sample:main", "longvie-train=longvie.train:main"]},
)

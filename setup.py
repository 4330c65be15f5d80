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
        # Lower bounds are the oldest versions this code was tested with.
        "torch>=2.4",
        "torchvision>=0.19",
        "diffusers>=0.35",
        "transformers>=4.51",
        "accelerate>=1.0",
        "safetensors>=0.4",
        "huggingface_hub>=0.26",
        "sentencepiece>=0.2",
        "protobuf>=4",
        "numpy>=1.24",
        "pillow>=10",
        "pyyaml>=6",
        "tqdm>=4.66",
        "imageio>=2.34",
        "imageio-ffmpeg>=0.5",
        "av>=12",
        "decord>=0.6; platform_machine=='x86_64' and platform_system=='Linux'",
        "opencv-python-headless>=4.8",
        "tensorboard>=2.14",
        "pytest>=8",
        "psutil>=5.9",
    ],
    extras_require={
        "gpu": ["flash-attn>=2.6", "deepspeed>=0.15"],
        "modelscope": ["modelscope>=1.18"],
    },
    entry_points={"console_scripts": ["longvie-sample=longvie.sample:main", "longvie-train=longvie.train:main"]},
)

"""Packaging for Video-LaVIT in the Hugging Face ecosystem (transformers + diffusers)."""

from setuptools import find_packages, setup

setup(
    name="video-lavit-hf",
    version="0.1.0",
    description="Video-LaVIT (ICML 2024) for transformers, diffusers, datasets, PEFT and TRL",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    package_data={"transformers_vlavit": ["*.jinja"]},
    python_requires=">=3.10",
    install_requires=[
        # 2.13.0 is the locally provided CPU build; install it first (see README) so pip keeps it.
        "torch>=2.4,<2.14",
        "transformers>=5.0",
        "diffusers>=0.35",
        "tokenizers>=0.21",
        "av>=14",
        "accelerate>=1.0",
        "safetensors>=0.4",
        "huggingface_hub>=0.34",
        "numpy>=1.26",
        "pillow>=10",
        "tqdm>=4.66",
    ],
    extras_require={
        "train": ["datasets>=3.0", "peft>=0.15", "trl>=0.20"],
        # reads the released SentencePiece tokenizer in `vlavit convert`
        "convert": ["sentencepiece>=0.2"],
        # `--engine ray` of datasets/prepare_*.py: data preparation on a Ray cluster
        "distributed": ["ray[data]>=2.40", "datasets>=3.0"],
        "test": [
            "pytest>=8",
            "sentencepiece>=0.2",
            "datasets>=3.0",
            "peft>=0.15",
            "trl>=0.20",
            # only to check that diffusers.utils.export_to_video takes our pipelines' output
            "imageio>=2.30",
            "imageio-ffmpeg>=0.5",
        ],
    },
    entry_points={"console_scripts": ["vlavit=transformers_vlavit.cli:main"]},
)

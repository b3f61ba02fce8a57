"""Production pretraining: Hiera-B (hiera_base_224) + TTM, aligned to roberta-base embeddings.

    python -m docjepa.prepare --config configs/hiera_b_ttm.py --source DIR_OF_PDFS --out DATA
    python -m docjepa.train --config configs/hiera_b_ttm.py --workdir gs://BUCKET/runs/b \
        --config.data.dir=DATA
    python -m docjepa.train --config configs/hiera_b_ttm.py:gpu1 ...    # the same model on one GPU
    python -m docjepa.train --config configs/hiera_b_ttm.py:smoke ...   # a few tiny steps, any machine

Text targets come from a user-downloaded Hugging Face roberta-base directory (config.json,
model.safetensors, tokenizer.json); model hubs are not reachable from the training machines,
so its path is read from $DOCJEPA_ROBERTA_BASE (or edit `text.model_dir`). The embedding width
(768 for roberta-base) is read from the prepared corpus's manifest (`model.embed_dim = 0`).
See docs/launching.md for the launchers and how the mesh is chosen.
"""

from __future__ import annotations

import os

import ml_collections as mlc

from configs import common

VARIANTS = ("", "gpu1", "smoke")


def production(*, hiera_name: str, ttm_heads: int, text_env: str, text_default: str, lr: float,
               warmup_steps: int, mesh: tuple[tuple[str, int], ...]) -> mlc.ConfigDict:
    """The multi-host recipe shared by the Hiera-B and Hiera-L configs."""
    c = common.base()

    # ~1024 px wide pages: a US-letter page gives 6 x 8 = 48 windows of 224 px at stride 160.
    c.prepare.source = "pdfs"                 # a directory of PDFs (or images, or tfds:NAME)
    c.prepare.page_width = 1024
    c.prepare.dpi = 150                       # a letter page renders 1275 px wide, then is resized
    c.prepare.val_fraction = 0.01
    c.prepare.shard_docs = 256
    c.prepare.workers = 16

    c.text.model_dir = os.environ.get(text_env, text_default)
    c.text.pooling = "mean"
    c.text.max_length = 512                   # RoBERTa's 514 positions minus its 2 offset slots

    c.data.dir = os.environ.get("DOCJEPA_DATA", "data/docs")
    c.data.max_steps = 64                     # windows per chunk (the gradient horizon); memory carries on
    c.data.max_pages = 4
    c.data.batch_size = 256                   # global: 256 x 64 = 16,384 patches per step
    # A 1024-px letter page is 6 x 8 = 48 windows, so a chunk of whole pages fills 48 of its 64
    # slots; Hiera encodes 80% of the slots, real windows packed (docs/data.md, "Window budget").
    c.data.window_capacity = 0.8
    c.data.worker_count = 16                  # threads per host decode PNGs and cut patches

    c.model.hiera.name = hiera_name
    c.model.hiera.remat = True                # keep only block inputs; recompute the rest in backward
    # TTM sizes from the paper (Ryoo et al., CVPR 2023): m = 96 memory tokens, r = 16 read tokens
    # (scenic's unit defaults, 64/8, are what configs/common.py uses).
    c.model.ttm.memory_size = 96
    c.model.ttm.num_read = 16
    c.model.ttm.num_layers = 2
    c.model.ttm.num_heads = ttm_heads         # 64-wide heads at Hiera's output width
    c.model.embed_dim = 0                     # the text encoder's width, from the manifest
    c.model.dtype = "bfloat16"                # compute in bf16; parameters and Adam moments stay fp32

    c.loss.chunked = True                     # ring SigLIP: no global 16k x 16k logits on one device

    c.optim.lr = lr
    c.optim.warmup_steps = warmup_steps
    c.optim.weight_decay = 0.05

    c.mesh = mesh

    c.train.steps = 100_000
    c.train.log_every = 50
    c.train.ckpt_every = 1000
    c.train.keep = 3
    c.train.eval_every = 5000

    c.evals.batch_size = 64
    c.evals.max_examples = 2048
    return c


def variant(c: mlc.ConfigDict, arg: str | None) -> mlc.ConfigDict:
    """'gpu1': the real model on one GPU (short run, small batch); 'smoke': a few tiny steps."""
    arg = arg or ""
    if arg not in VARIANTS:
        raise ValueError(f"config arg: {arg!r} is not one of {VARIANTS}")
    if arg in ("gpu1", "smoke"):
        c.mesh = (("data", -1), ("fsdp", 1), ("tensor", 1))
        c.train.eval_every = 0
    if arg == "gpu1":
        c.data.batch_size = 16                # 1,024 patches per step
        c.data.worker_count = 4
        c.optim.warmup_steps = 20
        c.train.steps = 200
        c.train.log_every = 10
        c.train.ckpt_every = 100
        c.evals.batch_size = 16
        c.evals.max_examples = 128
    if arg == "smoke":
        c.data.batch_size = 2
        c.data.max_steps = 4
        c.data.max_pages = 2
        c.data.worker_count = 0
        c.optim.warmup_steps = 2
        c.train.steps = 4
        c.train.log_every = 1
        c.train.ckpt_every = 2
        c.evals.batch_size = 2
        c.evals.max_examples = 8
    return c


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    return variant(production(
        hiera_name="hiera_base_224", ttm_heads=12, text_env="DOCJEPA_ROBERTA_BASE",
        text_default="models/roberta-base", lr=5e-4, warmup_steps=5000,
        mesh=(("data", -1), ("fsdp", 1), ("tensor", 1)),
    ), arg)

"""Production pretraining: Hiera-L (hiera_large_224) + TTM, aligned to roberta-large embeddings.

    python -m docjepa.train --config configs/hiera_l_ttm.py --workdir gs://BUCKET/runs/l \
        --config.data.dir=DATA
    python -m docjepa.train --config configs/hiera_l_ttm.py:gpu1 ...    # the same model on one GPU

The recipe is configs/hiera_b_ttm.py's with a larger encoder (213M parameters, output width
1152; 248M with TTM and heads), roberta-large targets ($DOCJEPA_ROBERTA_LARGE, width 1024 from
the manifest), a lower peak learning rate, and parameters plus Adam moments sharded over fsdp
groups of 8 devices (one GPU node, or 8 TPU chips): fp32 parameters + gradients + two Adam
moments, 16 bytes/param x 248M = 4.0 GB, become 0.5 GB per device.
The device count must be a multiple of 8; see docs/launching.md.
"""

from __future__ import annotations

import ml_collections as mlc

from configs import hiera_b_ttm


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    return hiera_b_ttm.variant(hiera_b_ttm.production(
        hiera_name="hiera_large_224", ttm_heads=18, text_env="DOCJEPA_ROBERTA_LARGE",
        text_default="models/roberta-large", lr=3e-4, warmup_steps=10_000,
        mesh=(("data", -1), ("fsdp", 8), ("tensor", 1)),
    ), arg)

"""Stage 2 on the CPU demo: the frozen stage-1 encoder of runs/demo feeds a small decoder LM
trained from scratch (4 layers, width 256, a byte-level BPE tokenizer learnt from the corpus's
prompts and answers) to answer OCR / layout / QA / NER instructions in JSON.

    python -m docjepa.finetune --config configs/stage2_demo.py --workdir runs/stage2 \\
        --config.stage1.workdir=runs/demo --config.data.dir=data/demo
    python -m docjepa.finetune --config configs/stage2_demo.py --workdir runs/stage2 --eval ...
    --config configs/stage2_demo.py:quick   # a few steps, for smoke tests

With a pretrained Llama-architecture checkpoint: --config.lm.model_dir=DIR (config.json,
tokenizer.json, *.safetensors) and optionally --config.lm.finetune=lora.
"""

import ml_collections as mlc

from configs import common
from docjepa.data import tasks


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    base = common.base()
    c = mlc.ConfigDict()
    c.seed = 0
    c.mesh, c.mesh_dcn, c.logical_axis_rules = base.mesh, base.mesh_dcn, base.logical_axis_rules

    c.stage1 = mlc.ConfigDict()
    c.stage1.workdir = "runs/demo"       # a stage-1 run: its config.json and checkpoints/
    c.stage1.step = 0                    # 0 = its latest checkpoint

    # One example: a whole document (at most max_chunks chunks of max_steps windows and max_pages
    # pages, read with the TTM's memory carried) and one of its instruction/answer pairs. A demo
    # page is 12 windows, a document 1-4 pages: one chunk holds any of them.
    c.data = mlc.ConfigDict()
    c.data.dir = "data/demo"
    c.data.train_split = "train"
    c.data.val_split = "val"
    c.data.max_steps = 48
    c.data.max_pages = 4
    c.data.max_chunks = 1
    c.data.tasks = tasks.TASKS
    c.data.batch_size = 4

    c.bridge = mlc.ConfigDict()
    c.bridge.hidden = 512                # projector MLP width
    c.bridge.memory = True               # the TTM's memory tokens after the document, besides its outputs
    c.bridge.blind = False               # True: no visual tokens at all (train and eval), the blind baseline
    # The frozen encoder reads each training document once, before the first step, and batches
    # carry its tokens (docs/stage2.md): a demo step then costs the projector and LM alone.
    c.bridge.cache_visual = True

    c.lm = mlc.ConfigDict()
    c.lm.model_dir = ""                  # "" = the embedded small LM below, trained from scratch
    c.lm.finetune = "full"               # full | lora (with lm.model_dir)
    c.lm.lora_rank = 8
    c.lm.lora_alpha = 16.0
    c.lm.max_text_tokens = 256           # prompt + answer + end; longer pairs are left out
    c.lm.vocab_size = 2048               # the embedded tokenizer's BPE entries, besides a token per number 0..1000
    c.lm.width = 256
    c.lm.layers = 4
    c.lm.heads = 4
    c.lm.kv_heads = 2
    c.lm.mlp_dim = 704
    c.lm.max_positions = 2048

    c.optim = base.optim
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 0.01

    c.train = base.train
    c.train.steps = 800                  # with the visual tokens cached, about 1 s a step on 2 busy cores (docs/stage2.md)
    c.train.log_every = 10
    c.train.ckpt_every = 200

    c.evals = mlc.ConfigDict()
    c.evals.batch_size = 8
    c.evals.max_examples = 64            # validation pairs answered; 0 = all
    c.evals.blind = True                 # also answer with the visual tokens removed (the trained LM, blind)
    c.evals.random_encoder = True        # also answer with a random-initialised stage-1 encoder
    if arg == "quick":
        c.data.batch_size = 2
        c.data.max_steps = 24            # documents of up to 2 pages: half the encoder work per example
        c.data.max_pages = 2
        c.lm.max_text_tokens = 128
        c.lm.vocab_size = 512
        c.lm.width = 64
        c.lm.layers = 2
        c.lm.heads = 2
        c.lm.kv_heads = 1
        c.lm.mlp_dim = 128
        c.bridge.hidden = 64
        c.bridge.cache_visual = False    # the encoder in the step (the CLI tests turn the cache on)
        c.train.steps = 4
        c.train.log_every = 1
        c.train.ckpt_every = 2
        c.optim.warmup_steps = 0
        c.evals.batch_size = 2
        c.evals.max_examples = 4
    return c

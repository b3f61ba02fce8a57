"""CPU demo: a tiny Hiera + TTM trained on a synthetic corpus (300 steps, about 8 minutes on 2 cores: README).

    python -m docjepa.train --config configs/demo.py --workdir runs/demo
    python -m docjepa.train --config configs/demo.py:quick ...   # a few steps, for smoke tests
"""

import ml_collections as mlc

from configs import common


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    c = common.base()
    c.prepare.source = "synth:240"
    c.prepare.val_fraction = 0.15
    # Training documents have 1-4 pages; half the validation documents are long (8-12 pages), so
    # that evaluation measures the memory over whole long documents (`memory` evaluator). The
    # training split is the same as without them (prepare.synth_long_splits).
    c.prepare.synth_long = 0.5
    c.prepare.synth_long_pages = (8, 12)
    c.prepare.synth_long_splits = ("val",)
    c.data.dir = "data/demo"
    # The learning recipe measured in docs/evaluation.md ("Batches that teach"): 60 document
    # streams of one window a step, started inside their first documents (data.stagger) so that a
    # batch mixes 59 documents and every place on the page; false negatives dropped in the batch
    # terms (loss.batch_false_negatives). The TTM memory is carried from window to window and
    # across documents' pages; its gradient horizon is one window (data.max_steps).
    c.data.batch_size = 60               # 60 streams x 1 window = 60 windows per step
    c.data.max_steps = 1
    c.data.max_pages = 1
    c.data.min_words = 1
    c.data.augment = False
    # Evaluation reads whole pages per chunk (a page's embedding pools all its windows).
    c.evals.max_steps = 12
    c.evals.max_pages = 2
    c.evals.max_examples = 4096
    # A 224-px Hiera from scratch learns where the ink lies from its flattened tokens, on ink
    # pixels (paper 0), far sooner than from their mean (docs/evaluation.md, "Where the ink lies").
    c.model.pool = "flatten"
    c.model.pixels = "ink"
    c.loss.window_bank_weight = 0.0      # R@1 up, still below the layout prior (docs/evaluation.md, "The top of the ranking")
    c.loss.page_bank_weight = 0.0
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 15
    c.optim.b2 = 0.999
    c.optim.clip_norm = 0.0
    # 300 steps: this recipe's step takes about 1.6 s alone on a 2-core AMD EPYC; `make demo`'s
    # time on it and what it gives for the 2-core Intel Xeon (1.8x slower per step): README.
    c.train.steps = 300
    c.train.log_every = 10
    c.train.ckpt_every = 50
    c.train.eval_every = 0
    if arg == "quick":  # a smoke run of every part: chunks of pages, augmentation, the text bank, the running doc term
        base = common.base()
        c.data, c.optim, c.evals = base.data, base.optim, base.evals
        c.loss.window_bank_weight = c.loss.page_bank_weight = c.loss.doc_running_weight = 1.0
        c.data.dir = "data/demo"
        c.data.max_pages = 2
        c.prepare.source = "synth:12"
        c.data.batch_size = 4
        c.data.max_steps = 8
        c.train.steps = 4
        c.train.log_every = 1
        c.train.ckpt_every = 2
        c.optim.lr = 2e-3
        c.optim.warmup_steps = 2
        c.evals.max_examples = 16
    return c

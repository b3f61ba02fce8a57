"""Defaults shared by every config; each config file starts from `base()` and edits it."""

from __future__ import annotations

import ml_collections as mlc


def base() -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.seed = 0

    # Documents -> records (python -m docjepa.prepare).
    c.prepare = mlc.ConfigDict()
    c.prepare.source = "synth:200"       # synth:N | DIR of PDFs | DIR of images | tfds:NAME
    c.prepare.page_width = 448           # pages are resized to this width before windows are cut
    c.prepare.window = 224
    c.prepare.stride = 160               # window stride: 64 px overlap
    c.prepare.dpi = 100                  # PDF render resolution
    c.prepare.max_pages = 256            # per document; longer documents are truncated
    c.prepare.synth_long = 0.0           # synth:N: this fraction of documents are long (reports, papers)
    c.prepare.synth_long_pages = (8, 64)  # ... of this many pages (the others have 1-4)
    c.prepare.synth_long_splits = ("train", "val")  # ... in these splits
    # synth:N: body text at least this x-height in px after the resize to page_width (0 = the
    # generator's print sizes, about 5 px at 448 px wide: too small to read).
    c.prepare.synth_min_x_height = 8.0
    c.prepare.max_pixels = 40_000_000    # per page image, before resizing
    c.prepare.val_fraction = 0.1
    c.prepare.shard_docs = 64            # documents per ArrayRecord shard
    c.prepare.workers = 2
    c.prepare.embed = True               # False: shards without text embeddings, for python -m docjepa.embed
    c.prepare.ocr_lang = "eng"

    # Frozen text encoder (runs in prepare only).
    c.text = mlc.ConfigDict()
    c.text.model_dir = ""                # "" = the embedded all-MiniLM-L6-v2
    c.text.pooling = "mean"              # mean | cls
    c.text.normalize = True
    c.text.max_length = 128
    c.text.batch_size = 64

    # Records -> batches (grain).
    c.data = mlc.ConfigDict()
    c.data.dir = "data/demo"
    c.data.train_split = "train"
    c.data.val_split = "val"
    c.data.max_steps = 16                # windows per chunk: TTM steps per train step, the gradient horizon
    c.data.max_pages = 4                 # pages per chunk
    c.data.min_words = 3                 # windows with fewer words are masked out of the loss
    c.data.batch_size = 8                # global batch: document streams, one chunk each per step
    c.data.window_capacity = 1.0         # fraction of a step's window slots Hiera encodes (padding skipped)
    c.data.worker_count = 0              # threads that build a batch's examples (decode, cut, augment)
    c.data.augment = True
    # Each stream begins its first document at a random window, so that a batch's rows are at
    # different places on their pages (DocStreams; docs/evaluation.md).
    c.data.stagger = True
    # G > 1: G x batch_size streams, one group's a step in turn, so that consecutive batches hold
    # different documents (DocStreams); the carried memory is [G, batch, m, C].
    c.data.stream_groups = 1
    c.data.shuffle_buffer = 0            # 0 = global index shuffle (grain MapDataset)
    c.data.layout_grid = 0               # pseudo-layout cells per window side (loss.layout_weight > 0)
    c.data.center_targets = True         # remove the training targets' mean (manifest; data/bank.py)

    # Model.
    c.model = mlc.ConfigDict()
    c.model.hiera = mlc.ConfigDict()
    c.model.hiera.name = "hiera_tiny_test"
    c.model.hiera.drop_path_rate = 0.0
    c.model.hiera.remat = False
    c.model.hiera.init_from = ""         # path to a safetensors file of Meta's PyTorch weights
    c.model.hiera.overrides = mlc.ConfigDict()  # any HieraConfig field, e.g. embed_dim, stages (scaling)
    c.model.ttm = mlc.ConfigDict()
    c.model.ttm.memory_size = 64         # m (scenic's unit: 64; the paper: 96)
    c.model.ttm.num_read = 8             # r (scenic's unit: 8; the paper: 16)
    c.model.ttm.process = "transformer"  # transformer | mixer | mlp
    c.model.ttm.num_layers = 2
    c.model.ttm.num_heads = 4
    c.model.ttm.dim = 0                  # 0 = Hiera's output width
    # False: the TTM reads Hiera's tokens without back-propagating into them (Hiera then learns from
    # the window summary's skip around the TTM only; docs/evaluation.md).
    c.model.ttm.encoder_grad = True
    c.model.ttm.use_memory = True        # False: the no-memory ablation (each step is its window summary, model.pool)
    c.model.layout_stage = 1             # Hiera stage read by the layout head (loss.layout_weight > 0)
    # Hiera's output tokens of a window -> one vector: "flatten" (each token normalised, all of them
    # in raster order through one linear map: keeps where the ink lies) or "mean" (models/docjepa.py).
    c.model.pool = "mean"
    c.model.window_position = True       # add an embedding of each window's box on its page
    c.model.center_features = True       # centre window/document features before the heads
    c.model.center_momentum = 0.9        # running mean used at evaluation (EMA per step)
    c.model.embed_dim = 0                # 0 = the text encoder's width, read from the manifest
    c.model.dtype = "float32"            # compute dtype: float32 | bfloat16 (params stay fp32)
    c.model.pixels = "imagenet"          # input normalisation (models/docjepa.py PIXELS): imagenet | ink

    # Loss.
    c.loss = mlc.ConfigDict()
    c.loss.window_weight = 1.0
    c.loss.page_weight = 1.0
    c.loss.doc_weight = 1.0              # document (TTM memory) <-> mean of its page texts
    # The same document target after every chunk of the document, not only its last (what has
    # been read so far <-> the whole text): a training signal for the memory's write at every step.
    c.loss.doc_running_weight = 0.0
    # SelfDocSeg's dense signal (data/pseudo_layout.py): a focal-loss classifier of pseudo-layout
    # regions on each token of Hiera stage `model.layout_stage`, whose map has `data.layout_grid`
    # cells per window side (224 / (4 * 2**stage) for the registered sizes). 0 = off.
    c.loss.layout_weight = 0.0
    c.loss.focal_alpha = 0.25            # Lin et al. 2017
    c.loss.focal_gamma = 2.0
    # Spatial-context pretexts (Penarrubia et al. 2024, "Flip" and "Sorting"): classify which of
    # {none, left-right, upside-down, both} flips, or which order of `sort_strips` horizontal
    # strips, was applied to `pretext_windows` copies of real windows per step (extra Hiera work).
    c.loss.flip_weight = 0.0
    c.loss.sort_weight = 0.0
    c.loss.pretext_windows = 8
    c.loss.sort_strips = 4               # 4! = 24 classes; must divide the window (56-px strips)
    # SelfDocSeg's self-distillation (Maity et al., ICDAR 2023; BYOL, Grill et al. 2020,
    # arXiv:2006.07733; models/byol.py): region vectors mask-pooled over each pseudo-layout region
    # (`data.layout_grid` cells) on the map of Hiera stage `model.layout_stage`, for two photometric
    # views (blur, colour jitter, colour drop, solarisation; no crop, no flip) of `byol_windows` real
    # windows per step; the online predictor regresses the EMA target's projection, 2 - 2 cos. Extra
    # Hiera work: both views through the online and the target encoder. 0 = off (no EMA copy kept).
    c.loss.byol_weight = 0.0
    c.loss.byol_momentum = 0.99          # EMA momentum of the target encoder and projector
    c.loss.byol_momentum_cosine = True   # BYOL's cosine schedule of the momentum to 1 over train.steps
    c.loss.byol_windows = 8
    c.loss.byol_regions = 8              # the largest regions pooled per window
    c.loss.byol_dim = 256                # projection width (BYOL's)
    c.loss.byol_hidden = 1024            # projector and predictor hidden width (BYOL: 4096)
    # VICReg's variance term (Bardes et al. 2022) on Hiera's window features (the mean output token
    # of each real window): a hinge that keeps every channel's standard deviation across the batch
    # at or above `variance_floor` (0.25: about its median at initialisation on the demo corpus).
    # Against the collapse of docs/evaluation.md. 0 = off.
    c.loss.variance_weight = 0.0
    c.loss.variance_floor = 0.25
    c.loss.chunked = False               # ring-chunked SigLIP over the batch axes of the mesh
    # False negatives (SegLoc): overlapping windows of one page, targets closer than
    # max_negative_cosine to the positive. Masked in the bank terms always, in the batch terms
    # with batch_false_negatives (neither positive nor negative: the cell is dropped).
    c.loss.max_negative_cosine = 0.9
    c.loss.batch_false_negatives = True
    # Text-bank negatives (data/bank.py): every distinct training target scored against each
    # window / page embedding besides the batch.
    c.loss.window_bank_weight = 1.0
    c.loss.page_bank_weight = 1.0
    c.loss.bank_size = 0                 # entries scored per step; 0 = the whole bank
    c.loss.t_prime_init = 2.302585       # log(10), SigLIP
    # SigLIP's b = -10 was chosen for batches of 32k pairs, i.e. about -log(n). bias_init_auto
    # starts each level at -log(n) for its own n (windows, pages, documents of the global batch):
    # b moves only about lr per Adam step, so a b far from -log(n) stays wrong for many steps.
    c.loss.bias_init = -10.0             # used when bias_init_auto is False
    c.loss.bias_init_auto = True

    # Optimiser.
    c.optim = mlc.ConfigDict()
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 50
    c.optim.min_lr_ratio = 0.01
    c.optim.weight_decay = 0.05
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.clip_norm = 1.0
    c.optim.grad_accum = 1

    # Mesh: one -1 takes the remaining devices.
    c.mesh = (("data", -1), ("fsdp", 1), ("tensor", 1))
    # Multi-slice TPU (hybrid mesh): how slices tile each axis over DCN, c.mesh then being one
    # slice; e.g. (("data", 4), ("fsdp", 1), ("tensor", 1)) for 4 slices. () = one slice.
    c.mesh_dcn = ()
    # Entries replacing those of sharding.LOGICAL_AXIS_RULES by name, e.g. (("embed", None),)
    # to keep weights whole (pure data parallelism) or (("act_embed", "tensor"),).
    c.logical_axis_rules = ()

    # Loop.
    c.train = mlc.ConfigDict()
    c.train.steps = 1000
    c.train.log_every = 10
    c.train.ckpt_every = 100
    c.train.keep = 3
    c.train.eval_every = 0               # 0 = only at step 0 and the end
    c.train.max_nonfinite = 5            # consecutive non-finite steps before stopping
    # Steps between the processes' agreement on a SIGTERM (an all-gather, a barrier across hosts).
    # One process checks every step; several act up to N-1 steps late, within the grace period.
    c.train.preempt_check_every = 10
    c.train.profile_steps = ()           # (a, b): a jax.profiler trace of steps a..b in WORKDIR/profile

    # Evaluators run by docjepa.eval and inside training (big_vision-style plug-ins).
    c.evals = mlc.ConfigDict()
    c.evals.names = ("retrieval", "category", "layout", "prior", "memory")  # python -m docjepa.eval
    c.evals.in_train = ("retrieval",)                   # run every train.eval_every steps
    c.evals.layout_stage = 1                              # Hiera stage (0-based) for the layout probe
    # Labels of the layout probe: "boxes" (documents' layout boxes; documents without are left
    # out), "pseudo" (pseudo-layout regions of every document), "auto" (boxes where a document has
    # them, pseudo-layout otherwise). Pseudo-labelled tokens are scored apart: probe/layout_pseudo/.
    c.evals.layout_labels = "boxes"
    c.evals.batch_size = 8
    # Chunks of evaluation (0 = data.max_steps / data.max_pages): whole pages, so that page
    # embeddings pool all their windows whatever chunks training reads (evals/features.py).
    c.evals.max_steps = 0
    c.evals.max_pages = 0
    c.evals.max_examples = 512           # chunks; documents begun before the limit are read to the end
    c.evals.long_doc_pages = 8           # `memory`: document retrieval over documents of >= this many pages
    c.evals.recall_max_k = 8             # `memory`: recall of page n - k from the state after page n, k <= this
    return c

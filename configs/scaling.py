"""Scaling studies: a family of model sizes, trained for T steps on N documents.

    python -m docjepa.train --config configs/scaling.py:size=m,steps=5000 --workdir runs/m
    python -m docjepa.scaling --sweep configs/scaling.py --out runs/scaling --mode print
    python -m docjepa.scaling --sweep configs/scaling.py:cpu --out /tmp/scaling_cpu --data /tmp/demo_data

The arg is a comma-separated list of key=value pairs (KEYS); `cpu` alone switches to the
CPU family (tiny widths, few steps: a whole size in a minute or two on a laptop).
`data=N` trains on the first N training documents (0 = all): it is recorded in
`config.scaling.train_docs`, and `docjepa.scaling` writes that subset of the corpus and
points `data.dir` at it.

`sweep(arg)` is the grid of a study: the same keys, where a value may list several
choices joined by '+' (e.g. `size=xs+s+m,steps=100+400`); the grid is their product.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import ml_collections as mlc

from configs import common


@dataclasses.dataclass(frozen=True)
class Size:
    """One model size: Hiera width/depth (HieraConfig fields) and the TTM's memory."""

    embed_dim: int        # Hiera stage-1 width; doubles at each of the 3 transitions
    num_heads: int        # Hiera stage-1 heads; doubles likewise
    stages: tuple[int, ...]
    memory_size: int      # TTM memory tokens m
    num_read: int         # TTM read tokens r
    ttm_dim: int          # TTM width (Hiera's output, 8 * embed_dim, is projected to it)


# Accelerator family. "m", "l", "xl" use the Hiera-T, -B and -L trunks (Ryali et al. 2023,
# Table 2 of arXiv:2306.00989); the TTM grows from scenic's unit (m=64, r=8) towards the
# paper's (m=96, r=16; Ryoo et al. 2023, arXiv:2211.09119).
SIZES: dict[str, Size] = {
    "xs": Size(32, 1, (1, 1, 2, 1), memory_size=16, num_read=4, ttm_dim=128),
    "s": Size(64, 1, (1, 2, 4, 2), memory_size=32, num_read=8, ttm_dim=256),
    "m": Size(96, 1, (1, 2, 7, 2), memory_size=64, num_read=8, ttm_dim=384),
    "l": Size(96, 1, (2, 3, 16, 3), memory_size=96, num_read=16, ttm_dim=768),
    "xl": Size(144, 2, (2, 6, 36, 4), memory_size=128, num_read=16, ttm_dim=1152),
}

# CPU family: the same structure at widths where one size trains in a minute or two.
CPU_SIZES: dict[str, Size] = {
    "xs": Size(4, 1, (1, 1, 1, 1), memory_size=8, num_read=2, ttm_dim=16),
    "s": Size(8, 1, (1, 1, 1, 1), memory_size=8, num_read=4, ttm_dim=32),
    "m": Size(8, 1, (1, 1, 2, 1), memory_size=16, num_read=4, ttm_dim=64),
    "l": Size(16, 1, (1, 1, 2, 1), memory_size=16, num_read=8, ttm_dim=96),
    "xl": Size(16, 2, (1, 2, 3, 1), memory_size=32, num_read=8, ttm_dim=128),
}

# key -> (type, default, what it sets); `cpu` is a flag and may be written without a value.
KEYS: dict[str, tuple[type, Any, str]] = {
    "size": (str, "m", "model size, a key of SIZES / CPU_SIZES"),
    "steps": (int, 0, "training steps (0 = the family's default)"),
    "data": (int, 0, "training documents: the first N of the corpus (0 = all)"),
    "batch": (int, 0, "global batch in examples (0 = the family's default)"),
    "lr": (float, 0.0, "peak learning rate (0 = the family's default)"),
    "seed": (int, 0, "initialisation and data order"),
    "cpu": (bool, False, "the CPU family: tiny widths, few steps"),
}

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _value(key: str, text: str) -> Any:
    kind = KEYS[key][0]
    try:
        if kind is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(text)
            return text.lower() in _TRUE
        return kind(text)
    except ValueError:
        raise ValueError(f"configs/scaling.py: {key}={text!r}: expected {kind.__name__}") from None


def _pairs(arg: str | None) -> dict[str, list[str]]:
    """'a=1,b=2+3,cpu' -> {'a': ['1'], 'b': ['2', '3'], 'cpu': ['true']}; unknown keys fail here."""
    out: dict[str, list[str]] = {}
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        key, eq, text = token.partition("=")
        key = key.strip()
        if key not in KEYS:
            raise ValueError(f"configs/scaling.py: unknown key {key!r} in {arg!r}; known keys: "
                             + ", ".join(f"{k} ({KEYS[k][2]})" for k in KEYS))
        if not eq and KEYS[key][0] is not bool:
            raise ValueError(f"configs/scaling.py: {key!r} needs a value ({key}=...) in {arg!r}")
        out[key] = text.split("+") if eq else ["true"]
    return out


def parse(arg: str | None) -> dict[str, Any]:
    """The arg of one run -> {key: value} over all KEYS, defaults filled in."""
    args = {k: default for k, (_, default, _) in KEYS.items()}
    for key, texts in _pairs(arg).items():
        if len(texts) != 1:
            raise ValueError(f"configs/scaling.py: {key}={'+'.join(texts)}: one value per run ('+' is for sweep())")
        args[key] = _value(key, texts[0])
    sizes = CPU_SIZES if args["cpu"] else SIZES
    if args["size"] not in sizes:
        raise ValueError(f"configs/scaling.py: size={args['size']!r}; choose one of {list(sizes)}")
    for key in ("steps", "data", "batch", "seed"):
        if args[key] < 0:
            raise ValueError(f"configs/scaling.py: {key}={args[key]} must be >= 0")
    if args["lr"] < 0:
        raise ValueError(f"configs/scaling.py: lr={args['lr']} must be >= 0")
    return args


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    args = parse(arg)
    size = (CPU_SIZES if args["cpu"] else SIZES)[args["size"]]
    c = common.base()
    c.seed = args["seed"]
    c.model.hiera.overrides = mlc.ConfigDict(
        {"embed_dim": size.embed_dim, "num_heads": size.num_heads, "stages": size.stages})
    c.model.ttm.memory_size = size.memory_size
    c.model.ttm.num_read = size.num_read
    c.model.ttm.dim = size.ttm_dim
    c.evals.in_train = ()                 # one eval at the end, by docjepa.scaling
    if args["cpu"]:
        c.data.dir = "data/demo"
        c.data.batch_size, c.data.max_steps, c.data.max_pages = 4, 8, 2
        c.optim.lr, c.optim.warmup_steps = 2e-3, 10
        steps = args["steps"] or 60
        c.evals.names = ("retrieval",)
        c.evals.max_examples = 64
    else:
        c.data.dir = "data/scaling"
        c.data.batch_size, c.data.max_steps, c.data.max_pages = 256, 16, 4
        c.model.dtype = "bfloat16"
        c.model.hiera.remat = True        # as configs/hiera_b_ttm.py: 4096 patches per step
        c.evals.batch_size = 64
        c.optim.lr, c.optim.warmup_steps = 1e-3, 500
        steps = args["steps"] or 5000
        c.evals.names = ("retrieval", "category")
    c.data.batch_size = args["batch"] or c.data.batch_size
    c.optim.lr = args["lr"] or c.optim.lr
    c.optim.warmup_steps = min(c.optim.warmup_steps, steps // 5)
    c.train.steps = steps
    c.train.log_every = max(1, min(50, steps // 10))
    c.train.ckpt_every = steps if args["cpu"] else max(100, steps // 10)
    c.scaling = mlc.ConfigDict({"size": args["size"], "train_docs": args["data"], "cpu": args["cpu"]})
    return c


def sweep(arg: str | None = None) -> list[dict[str, Any]]:
    """The grid of a study: every combination of the '+'-separated choices in `arg`."""
    pairs = _pairs(arg)
    if len(pairs.get("cpu", [""])) != 1:
        raise ValueError("configs/scaling.py: cpu takes one value in a sweep")
    cpu = _value("cpu", pairs["cpu"][0]) if "cpu" in pairs else False
    sizes = pairs.pop("size", list(CPU_SIZES if cpu else SIZES))
    axes = {k: [_value(k, t) for t in v] for k, v in {"size": sizes, **pairs}.items()}
    points = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    for p in points:
        parse(format_arg(p))          # every point must be a valid run
    return points


def format_arg(point: dict[str, Any]) -> str:
    """{'size': 'xs', 'cpu': True} -> 'size=xs,cpu' (the inverse of parse for one point)."""
    return ",".join(k if v is True else f"{k}={v}" for k, v in point.items() if v is not False)

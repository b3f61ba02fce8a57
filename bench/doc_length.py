"""Cost per window and peak memory against document length, through the real document
streams, model and train step, with the TTM memory carried over the whole document.

    PYTHONPATH=. python bench/doc_length.py [--pages 1,4,16,64,256] [--config configs/demo.py]

For each length L, a corpus of one document of L pages (one 224 x 224 window per page, noise
pixels: cost does not depend on content) is written as ArrayRecord; then, in a fresh process
per (L, mode) so that peak RSS is that run's own:
- train: the jitted train step over the document's chunks, one stream row (`data.batch_size=1`);
- eval: the feature extractor reading the document whole (`evals.batch_size=1`).
Reported: ms per window (median over the document's chunks after compilation), compiled
programs (1 = the same program for every chunk), XLA temp memory of the program, process
peak RSS.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bench import common  # noqa: E402

TITLE = "Cost per window against document length (document streams, memory carried)"
COLUMNS = ("date", "machine", "command", "mode", "pages", "chunks", "ms/window", "programs", "temp MiB",
           "peak RSS MiB")
DIM = 384  # the embedded text encoder's width (targets are random here)


def write_corpus(out: Path, pages: int) -> None:
    """One document of `pages` noise pages of 224 x 224 (one window each), as prepare lays it out."""
    import cv2
    from array_record.python.array_record_module import ArrayRecordWriter

    from docjepa.data.record import encode_record

    rng = np.random.default_rng(pages)
    pngs = [cv2.imencode(".png", rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))[1].tobytes() for _ in range(pages)]
    idx = np.arange(pages)
    record = encode_record({
        "doc_id": "long", "source": "bench", "split": "train", "category": "", "category_id": 0,
        "pages_png": pngs, "ocr_json": b"{}",
        "windows": np.stack([idx, 0 * idx, 0 * idx, 0 * idx + 224, 0 * idx + 224], 1).astype(np.int32),
        "window_text": [f"w{i}" for i in idx], "window_nwords": np.full(pages, 5, np.int32),
        "window_text_id": idx.astype(np.int32), "window_emb": rng.normal(size=(pages, DIM)).astype(np.float16),
        "page_text": [f"p{i}" for i in idx], "page_nwords": np.full(pages, 5, np.int32),
        "page_text_id": idx.astype(np.int32), "page_emb": rng.normal(size=(pages, DIM)).astype(np.float16),
    })
    out.mkdir(parents=True, exist_ok=True)
    w = ArrayRecordWriter(str(out / "train-00000-of-00001.array_record"), "group_size:1")
    w.write(record)
    w.close()
    manifest = {"version": 1, "window": 224, "stride": 224, "page_width": 224,
                "encoder": {"name": "bench", "dim": DIM, "pooling": "mean", "max_length": 8},
                "splits": {"train": {"files": ["train-00000-of-00001.array_record"], "documents": 1}},
                "categories": []}
    (out / "manifest.json").write_text(json.dumps(manifest))


def run_one(config: str, data: str, mode: str) -> dict:
    """Time one (corpus, mode) in this process; returns the row's measured fields."""
    import functools

    import jax
    from flax import nnx
    from docjepa import evals, sharding, state as factory, train
    from docjepa.data import pipeline

    cfg = common.load_config(config)
    cfg.data.dir, cfg.data.batch_size, cfg.data.center_targets, cfg.data.augment = data, 1, False, False
    cfg.loss.window_bank_weight = cfg.loss.page_bank_weight = 0.0
    cfg.evals.batch_size, cfg.evals.max_examples = 1, 10**9
    mesh = sharding.make_mesh((("data", 1), ("fsdp", 1), ("tensor", 1)), jax.devices()[:1])
    make_model = functools.partial(factory.build_model, cfg, DIM, 0)
    graphdef, abstract = nnx.split(nnx.eval_shape(make_model), nnx.Param)
    times, windows = [], []
    if mode == "train":
        tx, schedule = factory.build_optimizer(cfg.optim, 10**6, factory.decay_mask(abstract))
        step = jax.jit(train.make_train_step(graphdef, tx, schedule, cfg, mesh), donate_argnums=0)
        state = factory.init_train_state(make_model(), tx, 1)
        it = pipeline.make_train_iterator(cfg.data, seed=0, local_batch_size=1, process_index=0, process_count=1,
                                          num_epochs=1)
        batches = ({k: b[k] for k in factory.step_fields(cfg)} for b in it)  # one batch alive at a time
        first = next(batches)
        compiled = step.lower(state, first).compile()
        for b in itertools.chain([first], batches):
            t = time.perf_counter()
            state, metrics = compiled(state, b)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t)
            windows.append(int(b["step_mask"].sum()))
        programs, temp = step._cache_size() or 1, common.compiled_memory(compiled)["temp"]
    else:
        params = nnx.to_pure_dict(nnx.state(make_model(), nnx.Param))
        ext = evals.FeatureExtractor(cfg, graphdef, mesh, nnx.to_pure_dict(sharding.state_shardings(abstract, mesh)),
                                     layout=False)
        ext(params, data, "train", 10**9)  # compile
        t = time.perf_counter()
        feats = ext(params, data, "train", 10**9)
        total = time.perf_counter() - t
        n = len(feats.window)  # one window per page: the chunks are plan_chunks over the pages
        chunks = len(pipeline.plan_chunks(np.arange(n), cfg.data.max_steps, cfg.data.max_pages))
        times, windows = [total / chunks] * chunks, [n / chunks] * chunks
        programs = ext.forward._cache_size()
        temp = 0
    per_window = float(np.median(np.array(times[1:] or times) / np.array(windows[1:] or windows)))
    return {"chunks": len(times), "ms_per_window": per_window * 1e3, "programs": programs, "temp": temp,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", default="1,4,16,64,256")
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--modes", default="train,eval")
    parser.add_argument("--one", nargs=2, metavar=("DATA", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--no_write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    args = parser.parse_args()
    if args.one:  # the child process: measure and print one JSON line
        print(json.dumps(run_one(args.config, *args.one)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pages in (int(p) for p in args.pages.split(",")):
            data = Path(tmp) / f"p{pages}"
            write_corpus(data, pages)
            for mode in args.modes.split(","):
                cmd = [sys.executable, __file__, "--config", args.config, "--one", str(data), mode]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                     env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append((common.today(), common.machine(), common.command(), mode, pages, r["chunks"],
                             f"{r['ms_per_window']:.1f}", r["programs"], common.mib(r["temp"]) if r["temp"] else "-",
                             common.mib(r["peak_rss"])))
                common.print_table(COLUMNS[3:], [rows[-1][3:]])
    print()
    common.print_table(COLUMNS[3:], [r[3:] for r in rows])
    if not args.no_write:
        common.append_rows(TITLE, COLUMNS, rows, note=(
            f"`{args.config}` model, one stream row, one 224 x 224 window per page, `data.max_steps` windows per "
            "chunk; train = jitted train step per chunk (memory carried in the train state), eval = the feature "
            "extractor reading the document whole. ms/window: median over chunks after compilation (eval: total / "
            "windows). programs: compiled executables used (1 = one program for every length)."))


if __name__ == "__main__":
    main()

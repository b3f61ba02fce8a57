"""Text-embedding throughput of the frozen text tower (texts/s), the cost `prepare` pays per window.

Inputs are real English sentences (Python standard-library docstrings) cut to about 32 and
about 128 tokens. Every shape is compiled in a warm-up call before timing. Prints a table and
appends its rows to BENCHMARKS.md under "## Text embedding throughput" (bench/common.py).

    PYTHONPATH=. .venv/bin/python bench/text_embed.py [--model_dir DIR] [--batch 64] [--texts 512]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import time
from pathlib import Path

import jax
import tokenizers

from bench import common
from docjepa import text

TITLE = "Text embedding throughput"
COLUMNS = ("date", "machine", "command", "model", "batch", "length", "texts/s")
STDLIB = ("collections", "functools", "itertools", "pathlib", "json", "argparse", "logging", "re",
          "subprocess", "threading", "asyncio", "email.message", "http.client", "zipfile", "tarfile", "shutil",
          "typing", "unittest", "inspect", "datetime", "decimal", "statistics", "textwrap", "csv", "socket",
          "multiprocessing", "concurrent.futures", "configparser", "difflib", "enum", "dataclasses",
          "contextlib", "tempfile", "random", "urllib.request", "xml.etree.ElementTree", "smtplib", "ftplib")


def docstring_corpus() -> str:
    """Docstrings of standard-library modules, their functions, classes and methods, as one text."""
    docs = []
    for name in STDLIB:
        module = importlib.import_module(name)
        objects = [module]
        for _, obj in inspect.getmembers(module, lambda o: inspect.isfunction(o) or inspect.isclass(o)):
            objects += [obj] + [m for _, m in inspect.getmembers(obj, inspect.isfunction)]
        docs += [d for d in map(inspect.getdoc, objects) if d and len(d) > 80]
    return re.sub(r"\s+", " ", " ".join(dict.fromkeys(docs)))


def texts_of_length(encoder: text.TextEncoder, corpus: str, tokens: int, count: int) -> list[str]:
    """`count` consecutive pieces of `corpus` of about `tokens` tokens each (special tokens included)."""
    untruncated = tokenizers.Tokenizer.from_str(encoder.tokenizer.to_str())
    untruncated.no_truncation()
    enc = untruncated.encode(corpus[: count * tokens * 8], add_special_tokens=False)
    step = tokens - 3  # leave room for the special tokens and boundary re-tokenisation
    starts = range(0, len(enc.offsets) - step, step)
    pieces = [corpus[enc.offsets[i][0]:enc.offsets[i + step - 1][1]] for i in starts][:count]
    if len(pieces) < count:
        raise ValueError(f"corpus too small for {count} texts of {tokens} tokens")
    return pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default="", help="Hugging Face BERT/RoBERTa dir; empty = MiniLM")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--texts", type=int, default=512, help="texts timed per length")
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--out", default=str(common.BENCHMARKS))
    args = parser.parse_args()

    encoder = text.TextEncoder.from_pretrained(args.model_dir or None)
    corpus = docstring_corpus()
    device = jax.devices()[0]
    machine = common.machine(None if device.platform == "cpu" else f"{device.device_kind} x{jax.local_device_count()}")
    rows = []
    for length in args.lengths:
        texts = texts_of_length(encoder, corpus, length, args.texts)
        measured = sum(len(x) for x in encoder.tokenize(texts)) / len(texts)
        encoder.embed(texts, batch_size=args.batch, progress=False)  # warm-up: compiles every bucket
        start = time.perf_counter()
        encoder.embed(texts, batch_size=args.batch, progress=False)
        rate = len(texts) / (time.perf_counter() - start)
        print(f"{encoder.name}: {len(texts)} texts of {measured:.1f} tokens, batch {args.batch}: {rate:.1f} texts/s")
        rows.append((common.today(), machine, common.command(), encoder.name, args.batch,
                     f"~{round(measured)} tokens", f"{rate:.1f}"))
    common.print_table(COLUMNS, rows)
    common.append_rows(TITLE, COLUMNS, rows, path=Path(args.out))


if __name__ == "__main__":
    main()

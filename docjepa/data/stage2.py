"""Stage-2 data: the tokenizer of the language model and batches of (document chunk, task pair).

An example is one document read by the frozen encoder (its windows, as stage 1 cuts them into
chunks of `data.max_steps` windows and `data.max_pages` pages, at most `data.max_chunks` chunks,
padded to that many) and one of its instruction/answer pairs (`tasks.py`), as text token ids: the
prompt, a newline, the answer and the end-of-sequence token, right-padded to `lm.max_text_tokens`;
`loss_mask` marks the answer and its end token, the only positions the cross-entropy reads.
`focus` is the chunk whose TTM tokens the LM sees beside the memory: the first one holding the page
the prompt names, or the last chunk where it names none (QA: the answer may be on any page).
Longer documents and pairs whose text does not fit are left out of the index (and counted).

The embedded default trains a byte-level BPE tokenizer (Hugging Face `tokenizers`) on the training
split's prompts and answers when fine-tuning starts; with `lm.model_dir`, the checkpoint's own
tokenizer.json is read. Batches come from grain: a shuffled, repeated index of (record, pair),
sharded by process, whose iterator state is a position (saved with the checkpoint).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import ml_collections as mlc
import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from docjepa.data import pipeline, tasks
from docjepa.data.record import decode_record

PAD, EOS = "<pad>", "</s>"
# What the frozen encoder reads: a stage-1 example per chunk [K, ...] (`doc_page`: each window's
# page in the document, -1 on padding) and the chunk in focus.
ENCODER_FIELDS = ("patches", "step_mask", "page_ids", "window_box", "doc_page", "focus")
# The frozen encoder's output for an example (`bridge.visual_tokens`): tokens [V, C], which are
# real [V] and the page of each [V]; what a batch carries instead of pixels once they are cached.
VISUAL_FIELDS = ("visual", "visual_mask", "visual_page")
_CHUNK_FIELDS = ("patches", "step_mask", "page_ids", "window_box")
# "... page 2." as the prompts of tasks.py name a page (numbered from 1).
_PAGE = re.compile(r"\bpage (\d+)\.$")
_RECORD_FIELDS = pipeline.RECORD_FIELDS | {"tasks_json"}


class TextCodec:
    """A tokenizer with the end and padding ids stage 2 needs."""

    def __init__(self, tokenizer: Tokenizer, eos_id: int, pad_id: int):
        self.tokenizer, self.eos_id, self.pad_id = tokenizer, eos_id, pad_id

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids` up to the first end token."""
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def pair(self, prompt: str, answer: str | None) -> tuple[list[int], int]:
        """Token ids of `prompt`, a newline and (unless None) `answer` and the end token, and how
        many of them are the prompt's."""
        head = self.encode(prompt + "\n")
        return head + ([] if answer is None else self.encode(answer) + [self.eos_id]), len(head)


def train_tokenizer(texts: Iterator[str], vocab_size: int) -> TextCodec:
    """A byte-level BPE tokenizer of `vocab_size` entries learnt from `texts` (deterministic, so
    every process learns the same one), plus one token per whole number 0..tasks.BOX_SCALE: any
    string encodes, unseen characters as bytes.

    The number tokens are a location vocabulary, as Pix2Seq and Florence-2 quantise coordinates
    into tokens, but spelt as the JSON integers the answers carry: a box is always four tokens.
    Frequency-learnt merges cut numbers unevenly ("871" -> "8" "71", "143" -> "14" "3"), so a
    box took 4 to 9 tokens and a small LM lost count of its numbers (layout answers with five)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    # Added after training, so BPE ids stay as learnt (a number BPE already holds keeps its id);
    # single_word: never matched inside a longer number or word ("2024", "a100").
    tok.add_tokens([AddedToken(str(i), single_word=True, normalized=False) for i in range(tasks.BOX_SCALE + 1)])
    return TextCodec(tok, tok.token_to_id(EOS), tok.token_to_id(PAD))


def load_tokenizer(path: str | os.PathLike, eos_id: int | None = None, pad_id: int | None = None) -> TextCodec:
    """tokenizer.json at `path`; the end and padding ids default to its `</s>` and `<pad>` tokens
    (a Hugging Face checkpoint passes those of its config.json)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no tokenizer.json")
    tok = Tokenizer.from_file(os.fspath(path))
    eos = tok.token_to_id(EOS) if eos_id is None else eos_id
    if eos is None:
        raise ValueError(f"{path}: no {EOS} token and no eos_token_id in config.json")
    pad = tok.token_to_id(PAD) if pad_id is None else pad_id
    return TextCodec(tok, int(eos), int(eos if pad is None else pad))


def texts(data_dir: str, split: str) -> Iterator[str]:
    """Every prompt and answer of a split: what the embedded tokenizer learns from."""
    for p in tasks.read_pairs(data_dir, split):
        yield p.prompt
        yield p.answer


def pair_index(data_cfg: mlc.ConfigDict, split: str, codec: TextCodec, max_text_tokens: int
               ) -> tuple[np.ndarray, dict[str, int]]:
    """[N, 3] (record, pair, focus chunk) of the split's usable pairs, in record order, and the
    counts of those left out by reason (`long_document`: more than `data.max_chunks` chunks;
    `long_text`: more than `max_text_tokens` tokens)."""
    rows, skipped = [], {"long_document": 0, "long_text": 0}
    for r, rec in enumerate(pipeline.records(data_cfg.dir, split, {"windows", "tasks_json"})):
        pairs = [p for p in json.loads(rec["tasks_json"]) if p["task"] in data_cfg.tasks]
        chunks = pipeline.plan_chunks(rec["windows"][:, 0], data_cfg.max_steps, data_cfg.max_pages)
        if len(chunks) > data_cfg.max_chunks:
            skipped["long_document"] += len(pairs)
            continue
        for j, p in enumerate(json.loads(rec["tasks_json"])):
            if p["task"] not in data_cfg.tasks:
                continue
            if len(codec.pair(p["prompt"], p["answer"])[0]) > max_text_tokens:
                skipped["long_text"] += 1
            else:
                rows.append((r, j, focus_chunk(p["prompt"], [rec["windows"][a:b, 0] for a, b in chunks])))
    return np.array(rows, np.int64).reshape(-1, 3), skipped


def focus_chunk(prompt: str, chunk_pages: Sequence[np.ndarray]) -> int:
    """The chunk the LM sees beside the memory: the first holding the page the prompt names
    (`chunk_pages`: each chunk's window pages, from 0), else the last. ValueError when the
    document lacks the named page."""
    named = _PAGE.search(prompt)
    if not named:
        return len(chunk_pages) - 1
    held = [k for k, pages in enumerate(chunk_pages) if int(named.group(1)) - 1 in pages]
    if not held:
        raise ValueError(f"the prompt names page {named.group(1)}, which the document lacks")
    return held[0]


class Examples:
    """Index position -> one example: the encoder fields of the document's chunks ([K, ...]) and
    `focus`, or, once `visual` holds the frozen encoder's tokens of every (record, focus) of the
    index (`Stage2.cache_visual`), those tokens (VISUAL_FIELDS) and no pixels; then the pair's
    training text (`input_ids`, `text_mask`, `loss_mask`, [T]), its prompt alone for generation
    (`prompt_ids`, `prompt_mask`, [T]) and `task_id` (position in `tasks.TASKS`)."""

    def __init__(self, data_cfg: mlc.ConfigDict, split: str, index: np.ndarray, codec: TextCodec, max_text_tokens: int):
        self.source = grain.sources.ArrayRecordDataSource(
            [os.path.join(data_cfg.dir, f) for f in pipeline.read_manifest(data_cfg.dir)["splits"][split]["files"]])
        self.spec = pipeline.example_spec(data_cfg.dir, data_cfg.max_steps, data_cfg.max_pages)
        self.index, self.codec, self.length, self.max_chunks = index, codec, max_text_tokens, data_cfg.max_chunks
        self.visual: dict[tuple[int, int], dict[str, np.ndarray]] | None = None

    def pair(self, position: int) -> dict[str, Any]:
        """The stored pair of index `position` ({task, prompt, answer})."""
        record, j, _ = self.index[position]
        return json.loads(decode_record(self.source[int(record)], {"tasks_json"})["tasks_json"])[int(j)]

    def document(self, record: int) -> dict[str, np.ndarray]:
        """The encoder fields of a record's document (`document_fields`)."""
        doc = decode_record(self.source[record], _RECORD_FIELDS)
        doc["record_index"] = record
        return document_fields(doc, spec=self.spec, max_chunks=self.max_chunks)

    def __call__(self, position: int) -> dict[str, np.ndarray]:
        record, j, focus = (int(x) for x in self.index[position])
        if self.visual is not None:  # tokens cached: the pixels are not decoded
            p = self.pair(position)
            out = {**self.visual[record, focus], **text_fields(self.codec, p["prompt"], p["answer"], self.length)}
        else:
            doc = decode_record(self.source[record], _RECORD_FIELDS)
            doc["record_index"] = record
            p = json.loads(doc["tasks_json"])[j]
            out = example(doc, p["prompt"], p["answer"], spec=self.spec, codec=self.codec,
                          max_text_tokens=self.length, max_chunks=self.max_chunks)
        return {**out, "task_id": np.int32(tasks.TASKS.index(p["task"]))}


def document_fields(doc: dict[str, Any], *, spec: Any, max_chunks: int) -> dict[str, np.ndarray]:
    """The encoder fields of a decoded record ([K, ...] chunks, padded with empty ones, and
    `doc_page`: each window's page, -1 on padding). ValueError when the document needs more than
    `max_chunks` chunks."""
    chunks = spec.chunks(doc)
    if len(chunks) > max_chunks:
        raise ValueError(f"{len(chunks)} chunks of at most {spec.max_steps} windows and {spec.max_pages} pages, "
                         f"more than data.max_chunks={max_chunks}")
    exs = [spec.example(c, None) for c in chunks]
    exs += [spec.empty()] * (max_chunks - len(exs))
    return {**{k: np.stack([ex[k] for ex in exs]) for k in _CHUNK_FIELDS},
            "doc_page": np.stack([ex["window_rows"][:, 0] for ex in exs]), "chunks": np.int32(len(chunks))}


def text_fields(codec: TextCodec, prompt: str, answer: str | None, max_text_tokens: int) -> dict[str, np.ndarray]:
    """The pair's token rows ([T]): prompt + answer + end for training, the prompt alone for
    generation. ValueError when they need more than `max_text_tokens` tokens."""
    ids, n_prompt = codec.pair(prompt, answer)
    if len(ids) > max_text_tokens:
        raise ValueError(f"{len(ids)} text tokens, more than lm.max_text_tokens={max_text_tokens}")

    def row(tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
        out = np.full(max_text_tokens, codec.pad_id, np.int32)
        out[: len(tokens)] = tokens
        return out, np.arange(max_text_tokens) < len(tokens)

    input_ids, text_mask = row(ids)
    prompt_ids, prompt_mask = row(ids[:n_prompt])
    return {"input_ids": input_ids, "text_mask": text_mask,
            "loss_mask": text_mask & (np.arange(max_text_tokens) >= n_prompt), "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask}


def example(doc: dict[str, Any], prompt: str, answer: str | None, *, spec: Any, codec: TextCodec,
            max_text_tokens: int, max_chunks: int) -> dict[str, np.ndarray]:
    """One example of a decoded record (`pipeline.RECORD_FIELDS`) and a pair; `answer` None for
    generation (the text is the prompt alone, no position in `loss_mask`). Shared by the stored
    pairs and `python -m docjepa.generate`, so both read a document and a prompt the same way.
    ValueError when the document needs more than `max_chunks` chunks, or the prompt names a page
    it lacks."""
    fields = document_fields(doc, spec=spec, max_chunks=max_chunks)
    real = int(fields.pop("chunks"))
    focus = focus_chunk(prompt, list(fields["doc_page"][:real]))
    return {**fields, "focus": np.int32(focus), **text_fields(codec, prompt, answer, max_text_tokens)}


def train_dataset(examples: Examples, *, seed: int, local_batch: int, process_index: int,
                  process_count: int) -> grain.IterDataset:
    """This process's batches: its share of the index, reshuffled every epoch, repeated without
    end. `iter()` of it is the checkpointable iterator. Two threads build batches a few ahead:
    grain's default read-ahead (500 batches on 16 threads) holds 500 batches of pixels, some
    14 GB on the demo."""
    n = len(examples.index)
    if n < process_count * local_batch:
        raise pipeline.DataError(f"stage 2: {n} usable pairs in the training split, fewer than the global batch "
                                 f"of {process_count * local_batch}")
    ds = grain.MapDataset.range(n)[process_index::process_count].shuffle(seed=seed).repeat(None)
    return ds.map(examples).batch(local_batch, drop_remainder=True).to_iter_dataset(
        grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))


def eval_batches(examples: Examples, batch_size: int, limit: int | None = None
                 ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, int]]:
    """Batches of the index in order, each with the positions it holds and how many rows are
    real: the last batch is padded with copies of its first row, so every batch has one shape."""
    n = len(examples.index) if limit is None else min(limit, len(examples.index))
    for start in range(0, n, batch_size):
        positions = np.arange(start, min(start + batch_size, n))
        rows = [examples(int(p)) for p in positions]
        real = len(rows)
        rows += [rows[0]] * (batch_size - real)
        yield {k: np.stack([r[k] for r in rows]) for k in rows[0]}, positions, real

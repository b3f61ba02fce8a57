"""Stage-2 tasks: instruction/answer pairs built from a document's truth, each answer JSON with a schema.

    ocr     "Read page 2."                        {"lines": ["Invoice INV-2019-00042", ...]}
            "Read the text in box [x0, y0, x1, y1] of page 1."   (the same schema)
    layout  "List the layout elements of page 1." {"elements": [{"category": "title", "box": [x0, y0, x1, y1]}, ...]}
    qa      "What is the total amount due?"       {"answer": "$1,234.56", "page": 3}
    ner     "List the named entities on page 1."  {"entities": [{"type": "ORG", "text": "Kim Analytics"}, ...]}

Pages are numbered from 1 in prompts and answers. Boxes are integers in thousandths of the page's
width and height (resolution-free, so an answer holds whatever size the page is read at). OCR
pairs come from any document's words; layout, QA and NER pairs only from documents whose truth
the synthetic generator kept (`Document.facts` is not None), since elsewhere an empty layout or
entity list would be a guess, not the truth. prepare stores the pairs with each record
(`tasks_json`); `read_pairs` yields them back.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Collection, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from docjepa.data.ocr import ENTITY_TYPES, LAYOUT_CLASSES, Box, Document, Fact, Page
from docjepa.data.patchify import assign_words

TASKS = ("ocr", "layout", "qa", "ner")
BOX_SCALE = 1000  # box coordinates are integers in [0, BOX_SCALE] of the page's width and height
# The instruction of each page task, for page n (from 1); a QA prompt is its question.
PAGE_PROMPTS = {"ocr": "Read page {n}.", "layout": "List the layout elements of page {n}.",
                "ner": "List the named entities on page {n}."}


class Pair(NamedTuple):
    doc_id: str
    task: str
    prompt: str
    answer: str  # JSON that validates against SCHEMAS[task]


_TEXT = {"type": "string", "minLength": 1}
_PAGE = {"type": "integer", "minimum": 1}
_BOX = {"type": "array", "minItems": 4, "maxItems": 4,
        "items": {"type": "integer", "minimum": 0, "maximum": BOX_SCALE}}


def _object(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


# JSON Schema (draft 2020-12 subset): `check` below reads exactly these keywords.
SCHEMAS: dict[str, dict[str, Any]] = {
    "ocr": _object(lines={"type": "array", "items": _TEXT}),
    "layout": _object(elements={"type": "array",
                                "items": _object(category={"enum": list(LAYOUT_CLASSES)}, box=_BOX)}),
    "qa": _object(answer=_TEXT, page=_PAGE),
    "ner": _object(entities={"type": "array", "items": _object(type={"enum": list(ENTITY_TYPES)}, text=_TEXT)}),
}


class TaskSchemaError(ValueError):
    """An answer that is not JSON or does not match its task's schema; the message names the path."""


_TYPES: dict[str, type | tuple[type, ...]] = {"object": dict, "array": list, "string": str, "integer": int}


def check(schema: dict[str, Any], value: Any, path: str = "$") -> None:
    """Raise TaskSchemaError unless `value` matches `schema` (the keywords SCHEMAS uses; no
    jsonschema dependency)."""
    if "enum" in schema and value not in schema["enum"]:
        raise TaskSchemaError(f"{path}: {value!r:.40} is not one of {schema['enum']}")
    kind = schema.get("type")
    if kind and (isinstance(value, bool) or not isinstance(value, _TYPES[kind])):
        raise TaskSchemaError(f"{path}: expected {kind}, got {type(value).__name__}")
    if kind == "object":
        missing = [k for k in schema["required"] if k not in value]
        extra = sorted(set(value) - set(schema["properties"]))
        if missing or extra:
            raise TaskSchemaError(f"{path}: missing {missing}" if missing else f"{path}.{extra[0]}: unknown field")
        for k, sub in schema["properties"].items():
            check(sub, value[k], f"{path}.{k}")
    elif kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            raise TaskSchemaError(f"{path}: {len(value)} items, expected {schema.get('minItems', 0)}.."
                                  f"{schema.get('maxItems', 'any')}")
        for i, item in enumerate(value):
            check(schema["items"], item, f"{path}[{i}]")
    elif kind == "string" and len(value) < schema.get("minLength", 0):
        raise TaskSchemaError(f"{path}: empty string")
    elif kind == "integer" and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        raise TaskSchemaError(f"{path}: {value} outside [{schema.get('minimum')}, {schema.get('maximum')}]")


def validate(task: str, answer: str) -> Any:
    """The parsed answer; TaskSchemaError when it is not JSON or does not match the task's schema
    (what the stage-2 evaluators count as invalid output)."""
    if task not in SCHEMAS:
        raise TaskSchemaError(f"task: {task!r} is not one of {', '.join(TASKS)}")
    try:
        value = json.loads(answer)
    except ValueError as e:
        raise TaskSchemaError(f"$: not valid JSON ({e})") from None
    check(SCHEMAS[task], value)
    return value


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _lines(page: Page, indices: Sequence[int] | None = None) -> list[str]:
    """Words (all, or `indices`) in reading order, a new line wherever the word's line id changes."""
    words = sorted((page.words[i] for i in indices) if indices is not None else page.words, key=lambda w: w.order)
    lines: list[list[str]] = []
    for k, w in enumerate(words):
        if k == 0 or w.line != words[k - 1].line:
            lines.append([])
        lines[-1].append(w.text)
    return [" ".join(ln) for ln in lines]


def box_permille(box: Box, page: Page) -> list[int]:
    """A pixel box as integers in thousandths of the page's width and height."""
    sizes = (page.width, page.height, page.width, page.height)
    return [min(BOX_SCALE, max(0, round(v / s * BOX_SCALE))) for v, s in zip(box, sizes)]


def page_prompt(task: str, n: int) -> str:
    """The prompt of a page task ("ocr", "layout", "ner") for page `n` (from 1), as the pairs
    state it: what `python -m docjepa.generate` asks a trained model."""
    return PAGE_PROMPTS[task].format(n=n)


def _page_pairs(doc: Document, i: int) -> list[tuple[str, str, str]]:
    """OCR of page i and of one of its text regions (picked by a hash of doc id and page, so it is
    stable), and with generator truth its layout and entities."""
    page, n = doc.pages[i], i + 1
    out = [("ocr", page_prompt("ocr", n), _json({"lines": _lines(page)}))]
    boxes = [box_permille(e.box, page) for e in page.layout]
    # The region's words are those whose centre lies in the box as the prompt states it.
    pixels = np.array(boxes, np.float64).reshape(-1, 4) * ([page.width, page.height] * 2) / BOX_SCALE
    regions = [(box, inside) for box, inside in zip(boxes, assign_words(page.words, pixels)) if inside]
    if regions:
        box, inside = regions[zlib.crc32(f"{doc.doc_id}/{n}".encode()) % len(regions)]
        out.append(("ocr", f"Read the text in box {box} of page {n}.", _json({"lines": _lines(page, inside)})))
    if doc.facts is None:
        return out
    elements = [{"category": e.cls, "box": box} for e, box in zip(page.layout, boxes)]
    out.append(("layout", page_prompt("layout", n), _json({"elements": elements})))
    text = doc.page_text(i)
    entities = {(f.entity, f.text) for f in doc.facts if f.page == i and f.entity}
    ordered = sorted(entities, key=lambda e: (text.find(e[1]), e))  # reading order
    out.append(("ner", page_prompt("ner", n),
                _json({"entities": [{"type": t, "text": s} for t, s in ordered]})))
    return out


def _qa_pairs(facts: Sequence[Fact]) -> list[tuple[str, str, str]]:
    """One pair per question, at the first page that answers it; a question the document answers
    in two different ways is ambiguous and left out."""
    first: dict[str, Fact] = {}
    ambiguous: set[str] = set()
    for f in facts:
        if f.question:
            if first.setdefault(f.question, f).text != f.text:
                ambiguous.add(f.question)
    return [("qa", q, _json({"answer": f.text, "page": f.page + 1})) for q, f in first.items() if q not in ambiguous]


def document_pairs(doc: Document) -> list[tuple[str, str, str]]:
    """(task, prompt, answer) for every page of `doc`, then its questions."""
    pairs = [p for i in range(len(doc.pages)) for p in _page_pairs(doc, i)]
    return pairs + (_qa_pairs(doc.facts) if doc.facts is not None else [])


def encode(pairs: Sequence[tuple[str, str, str]]) -> bytes:
    """The record field `tasks_json`: a JSON list of {"task", "prompt", "answer"}."""
    return _json([{"task": t, "prompt": p, "answer": a} for t, p, a in pairs]).encode()


def read_pairs(data_dir: str, split: str = "train", tasks: Collection[str] = TASKS) -> Iterator[Pair]:
    """The stored pairs of a prepared split, in record order, keeping only `tasks`."""
    from docjepa.data import pipeline  # grain: needed to read records, not to build pairs

    for rec in pipeline.records(data_dir, split, {"doc_id", "tasks_json"}):
        for p in json.loads(rec["tasks_json"]):
            if p["task"] in tasks:
                yield Pair(rec["doc_id"], p["task"], p["prompt"], p["answer"])

"""Stage-2 task pairs: every answer validates against its task's schema and states the generator's
truth (words in reading order, layout boxes, placed values and entities on the pages they name),
and the pairs survive prepare -> records -> loader."""

import dataclasses
import json
import re

import numpy as np
import pytest

from configs import demo
from docjepa.data import ocr, pipeline, prepare, synth, tasks


@pytest.fixture(scope="module")
def docs():
    """One multi-page document of every category, and one of one page."""
    out = [synth.generate(300 + i, 0, category=c, min_pages=2, max_pages=3)[0] for i, c in enumerate(synth.CATEGORIES)]
    return out + [synth.generate(3, 0, max_pages=1)[0]]


def _centre_in(word: ocr.Word, box: list[int], page: ocr.Page) -> bool:
    x0, y0, x1, y1 = (v / 1000 * s for v, s in zip(box, (page.width, page.height) * 2))
    cx, cy = (word.box[0] + word.box[2]) / 2, (word.box[1] + word.box[3]) / 2
    return x0 <= cx < x1 and y0 <= cy < y1


def test_answers_validate_and_state_the_truth(docs):
    for doc in docs:
        pairs = tasks.document_pairs(doc)
        by_task = {t: [(p, tasks.validate(t, a)) for t2, p, a in pairs if t2 == t] for t in tasks.TASKS}
        n = len(doc.pages)
        assert {p for p, _ in by_task["layout"]} == {f"List the layout elements of page {i + 1}." for i in range(n)}
        assert len(by_task["ner"]) == n and by_task["qa"]
        for prompt, ans in by_task["ocr"]:
            page_no = int(re.search(r"page (\d+)\.$", prompt).group(1))
            page = doc.pages[page_no - 1]
            words = sorted(page.words, key=lambda w: w.order)
            if prompt.startswith("Read page"):  # the page's words in reading order, one line per line id
                assert " ".join(ans["lines"]) == doc.page_text(page_no - 1)
                assert len(ans["lines"]) == len({w.line for w in words})
            else:  # a region: the words whose centre lies in the prompt's box
                box = json.loads(re.search(r"box (\[.*?\])", prompt).group(1))
                assert " ".join(ans["lines"]) == " ".join(w.text for w in words if _centre_in(w, box, page))
        assert sum(p.startswith("Read the text in box") for p, _ in by_task["ocr"]) == n
        for i, (_, ans) in enumerate(by_task["layout"]):  # the generator's boxes, in thousandths of the page
            page = doc.pages[i]
            assert [e["category"] for e in ans["elements"]] == [e.cls for e in page.layout]
            want = np.array([e.box for e in page.layout]).reshape(-1, 4) / ([page.width, page.height] * 2) * 1000
            np.testing.assert_allclose([e["box"] for e in ans["elements"]] or np.zeros((0, 4)), want, atol=0.5)
        for _, ans in by_task["qa"]:
            assert ans["answer"] in doc.page_text(ans["page"] - 1)
        if n > 1:  # a question whose answer is on another page than the first
            assert any(ans["page"] > 1 for _, ans in by_task["qa"]), doc.category
        for i, (_, ans) in enumerate(by_task["ner"]):
            assert all(e["text"] in doc.page_text(i) for e in ans["entities"])
    entities = {e["type"] for doc in docs for t, _, a in tasks.document_pairs(doc) if t == "ner"
                for e in json.loads(a)["entities"]}
    assert entities == set(tasks.ENTITY_TYPES)


def test_values_are_the_ones_placed():
    """QA answers are the values the builders drew, not text parsed back from the page."""
    invoice = synth.generate(1, 0, category="invoice", min_pages=2, max_pages=2)[0]
    qa = {p: json.loads(a) for t, p, a in tasks.document_pairs(invoice) if t == "qa"}
    text = " ".join(invoice.page_text(i) for i in range(2))
    total = re.search(r"Total due: (\S+)", text).group(1)
    assert qa["What is the total amount due?"] == {"answer": total, "page": 2}
    assert re.search(r"Invoice number: (\S+)", text).group(1) == qa["What is the invoice number?"]["answer"]
    sub, tax = (float(qa[q]["answer"].strip("$").replace(",", "")) for q in ("What is the subtotal?",
                                                                              "How much tax is charged?"))
    assert abs(sub + tax - float(total.strip("$").replace(",", ""))) <= 0.011


def test_validator_rejects_malformed_answers():
    assert tasks.validate("qa", '{"answer": "Net 30", "page": 2}') == {"answer": "Net 30", "page": 2}
    bad = {
        "ocr": ['{"lines": "abc"}', '{"lines": [""]}', '{"lines": []', '{"text": "a"}'],
        "layout": ['{"elements": [{"category": "table", "box": [0, 0, 10]}]}',
                   '{"elements": [{"category": "table", "box": [0, 0, 10, 1001]}]}',
                   '{"elements": [{"category": "chart", "box": [0, 0, 10, 10]}]}',
                   '{"elements": [{"category": "table", "box": [0, 0, 10.5, 10]}]}'],
        "qa": ['{"answer": "x", "page": 0}', '{"answer": "x", "page": true}', '{"answer": "x"}',
               '{"answer": "x", "page": 1, "why": "y"}', '["x", 1]'],
        "ner": ['{"entities": [{"type": "CITY", "text": "Reno"}]}', '{"entities": [{"type": "ORG"}]}'],
    }
    for task, answers in bad.items():
        for answer in answers:
            with pytest.raises(tasks.TaskSchemaError, match=r"^\$"):
                tasks.validate(task, answer)
    with pytest.raises(tasks.TaskSchemaError, match="task: 'vqa'"):
        tasks.validate("vqa", "{}")


def test_dropped_pages_take_their_facts_along(docs):
    doc = next(d for d in docs if d.category == "invoice")
    kept = doc.with_pages([0, 2])
    assert [f.page for f in kept.facts] == [{0: 0, 2: 1}[f.page] for f in doc.facts if f.page != 1]
    for _, _, a in (p for p in tasks.document_pairs(kept) if p[0] == "qa"):
        ans = json.loads(a)
        assert ans["answer"] in kept.page_text(ans["page"] - 1)


def test_prepare_records_loader_round_trip(synth_corpus):
    """The shared corpus (the real `python -m docjepa.prepare` of synth:8, configs/demo.py:quick):
    its stored pairs are those the generator's truth gives for each stored document."""
    cfg = demo.get_config("quick")
    source = prepare.make_source("synth:8", cfg.seed)
    work_cfg = prepare.work_settings(cfg.prepare, None)
    generated = {item.doc_id: source.read(item, work_cfg)[0] for item in source.items()}
    seen = set()
    for split in ("train", "val"):
        loaded, expected = list(tasks.read_pairs(str(synth_corpus), split)), []
        for rec in pipeline.records(str(synth_corpus), split, {"doc_id", "ocr_json"}):
            doc = generated[rec["doc_id"]]
            stored = dataclasses.replace(ocr.Document.from_json(rec["ocr_json"]), facts=doc.facts)
            pairs = tasks.document_pairs(stored)
            expected += [tasks.Pair(rec["doc_id"], *p) for p in pairs]
            # Stored pages are resized and their boxes rounded to whole pixels (a pixel of a 448-px
            # page is 2.2 thousandths): within that, the boxes are the generator's.
            layouts = [json.loads(a)["elements"] for t, _, a in pairs if t == "layout"]
            for page, elements in zip(doc.pages, layouts, strict=True):
                want = np.array([e.box for e in page.layout]).reshape(-1, 4) / ([page.width, page.height] * 2) * 1000
                np.testing.assert_allclose([e["box"] for e in elements] or np.zeros((0, 4)), want, atol=2.5)
        assert loaded == expected
        assert list(tasks.read_pairs(str(synth_corpus), split, tasks=("qa",))) == [p for p in loaded if p.task == "qa"]
        seen |= {p.task for p in loaded}
    assert seen == set(tasks.TASKS)

"""Ask a stage-2 model about a file: python -m docjepa.generate --workdir W (--pdf F | --image F)
--task ocr|qa|layout|ner [--question "..."] [--page N] [--step S].

W is a `python -m docjepa.finetune` workdir: its config.json names the stage-1 run (the frozen
encoder) and the corpus, whose manifest.json says how pages were rendered and cut (dpi, page width,
windows, the caps on pages and pixels). The file goes through prepare's own reader
(`prepare.process_document`: render, text layer or OCR, resize, windows), the document and the
prompt the task pairs use ("Read page N.", or the question) become one example as the stored pairs
do (`stage2.example`), and the encoder, projector and LM answer by greedy decoding. The encoder
reads the whole document (up to the corpus's page cap), chunk after chunk with the TTM's memory
carried, whatever `data.max_chunks` training used: its memory per chunk stays the same. The words are
read, as prepare reads them, only because prepare keeps no page without text; the model sees
pixels alone and text embeddings are not computed.

Prints one line on stdout: {"task", "page" | "question", "valid", "answer"}, where `answer` is the
parsed JSON when it matches the task's schema and the decoded text otherwise (then with "error",
why it does not). A bad command line, file, workdir or page is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging

from docjepa import checkpoint, cli, run_config, sharding
from docjepa.data import ocr, pipeline, prepare, stage2, tasks
from docjepa.stage2_state import Stage2

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A python -m docjepa.finetune workdir (config.json, tokenizer, checkpoints).")
    flags.DEFINE_string("pdf", None, "A PDF file to read.")
    flags.DEFINE_string("image", None, "A page image (PNG, JPEG, TIFF, ...) to read.")
    flags.DEFINE_string("task", None, f"One of {', '.join(tasks.TASKS)}.")
    flags.DEFINE_string("question", None, "The question (--task=qa only).")
    flags.DEFINE_integer("page", 1, "The page to read, from 1 (ocr, layout, ner).")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")


def _check_flags() -> tuple[str, str]:
    """(kind, path) of the file to read, or a usage error for the first bad flag."""
    if FLAGS.task not in tasks.TASKS:
        cli.usage_error(f"--task: {FLAGS.task!r} is not one of {', '.join(tasks.TASKS)}")
    if FLAGS.task == "qa" and not (FLAGS.question or "").strip():
        cli.usage_error("--question: required with --task=qa")
    if FLAGS.task != "qa" and FLAGS.question is not None:
        cli.usage_error(f"--question: only for --task=qa (--task={FLAGS.task} asks about --page)")
    if FLAGS.task == "qa" and FLAGS["page"].present:
        cli.usage_error("--page: not used by --task=qa (the question is asked of the whole document)")
    if FLAGS.page < 1:
        cli.usage_error(f"--page: {FLAGS.page}; pages are numbered from 1")
    given = [(kind, path) for kind, path in (("pdf", FLAGS.pdf), ("image", FLAGS.image)) if path]
    if len(given) != 1:
        cli.usage_error("give exactly one of --pdf and --image")
    kind, path = given[0]
    if not os.path.isfile(path):
        cli.usage_error(f"--{kind}: {path}: no such file")
    if not FLAGS.workdir:
        cli.usage_error("--workdir: required (a python -m docjepa.finetune workdir)")
    return kind, path


def load_config(workdir: str) -> Any:
    """The stage-2 config the workdir was trained with; ValueError when it is not a finetune
    workdir with a checkpoint."""
    try:
        cfg = run_config.load(workdir)
    except FileNotFoundError as e:
        raise ValueError(f"--workdir: {e}") from None
    if "stage1" not in cfg or "lm" not in cfg:
        raise ValueError(f"--workdir: {workdir} is not a python -m docjepa.finetune workdir (no stage1 in config.json)")
    if not any(p.name.isdigit() for p in (checkpoint.workdir_path(workdir) / "checkpoints").glob("*")):
        raise ValueError(f"--workdir: {workdir} has no checkpoint")
    return cfg


def read_document(kind: str, path: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """The file as a decoded record (`pipeline.RECORD_FIELDS`) rendered and cut with the corpus's
    prepare settings; the text fields the encoder does not read are empty. ValueError (one line)
    for a file prepare would reject."""
    source = prepare.FileSource(path)
    try:
        found = ocr.file_kind(source.path)
    except ocr.BadDocument as e:
        raise ValueError(f"--{kind}: {e}") from None
    if found != kind:
        raise ValueError(f"--{kind}: {path} is {'a PDF' if found == 'pdf' else 'an image'}; pass it as --{found}")
    settings = manifest["config"]["prepare"]
    try:
        lang = prepare.usable_ocr_lang(source, settings.get("ocr_lang"))
    except prepare.PrepareError as e:
        raise ValueError(f"--{kind}: {e}") from None
    result = prepare.process_document(source, source.items()[0], prepare.work_settings(settings, lang))
    if "doc" not in result:
        bad = result["rejected"][0]
        raise ValueError(f"--{kind}: {bad['reason']}: {bad['detail']}")  # the detail names the file
    for bad in result["rejected"]:  # pages prepare drops (no text): the others are renumbered
        logging.warning("%s page %d left out (%s), as prepare leaves it out", bad["file"], bad["page"] + 1,
                        bad["reason"])
    doc = dict(result["doc"])
    windows, pages = len(doc["windows"]), len(doc["pages_png"])
    dim = int(manifest["encoder"]["dim"])
    doc.update(window_text_id=np.full(windows, -1, np.int32), window_emb=np.zeros((windows, dim), np.float16),
               page_text_id=np.full(pages, -1, np.int32), page_emb=np.zeros((pages, dim), np.float16),
               record_index=-1)
    return doc


def report(task: str, text: str, **asked: Any) -> dict[str, Any]:
    """The line generate prints: the answer parsed when it matches the task's schema, else the
    decoded text and why it does not."""
    try:
        return {"task": task, **asked, "valid": True, "answer": tasks.validate(task, text)}
    except tasks.TaskSchemaError as e:
        return {"task": task, **asked, "valid": False, "answer": text, "error": str(e)}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.usage_error(f"unexpected argument {argv[1]!r}")
    if not FLAGS["verbosity"].present:  # orbax's INFO lines would bury the answer's
        logging.set_verbosity(logging.WARNING)
    kind, path = _check_flags()
    try:
        cfg = load_config(FLAGS.workdir)
        manifest = pipeline.read_manifest(cfg.data.dir)
        doc = read_document(kind, path, manifest)
    except (ValueError, pipeline.DataError) as e:
        cli.usage_error(e)
    asked = {"question": FLAGS.question.strip()} if FLAGS.task == "qa" else {"page": FLAGS.page}
    pages = len(doc["pages_png"])
    if FLAGS.task != "qa" and FLAGS.page > pages:
        cli.usage_error(f"--page: {FLAGS.page}, but {path} has {pages} page{'s' * (pages != 1)} with text")
    prompt = asked["question"] if FLAGS.task == "qa" else tasks.page_prompt(FLAGS.task, FLAGS.page)

    try:
        setup = Stage2(cfg, FLAGS.workdir, sharding.make_mesh((("data", 1), ("fsdp", 1), ("tensor", 1)),
                                                              jax.devices()[:1]))
    except (ValueError, FileNotFoundError) as e:  # the stage-1 run it names: missing, or not usable
        cli.usage_error(f"--workdir: {e}")
    data = cfg.data
    spec = pipeline.example_spec(data.dir, data.max_steps, data.max_pages)
    try:  # the whole document, chunk after chunk with the memory carried, however many chunks training used
        ex = stage2.example(doc, prompt, None, spec=spec, codec=setup.codec, max_text_tokens=cfg.lm.max_text_tokens,
                            max_chunks=max(data.max_chunks, len(spec.chunks(doc))))
    except ValueError as e:
        cli.usage_error(f"--{kind}: {path}: {e}")
    ckpt = checkpoint.Checkpointer(FLAGS.workdir, keep=cfg.train.keep)
    try:
        state = ckpt.restore(FLAGS.step, setup.abstract_state())
    except (FileNotFoundError, ValueError) as e:
        cli.usage_error(f"--step: {e}")
    finally:
        ckpt.close()
    batch = {k: v[None] for k, v in ex.items()}
    answer = setup.answer(state, batch, cfg.lm.max_text_tokens)[0]
    print(json.dumps(report(FLAGS.task, answer, **asked), ensure_ascii=False))


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)

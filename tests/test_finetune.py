"""Stage 2 (docjepa/finetune.py): a real stage-1 run's encoder, frozen, feeds the small decoder LM.

The corpus is the shared one of the real prepare (with its task pairs); the stage-1 checkpoint
comes from two steps of the real `python -m docjepa.train`.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

import pdf_factory
import train_utils
from bench.device_check import compare, final_state
from configs import stage2_demo
from docjepa import finetune, sharding
from docjepa.data import stage2, tasks
from docjepa.evals import answers
from docjepa.models import bridge, decoder

# One worker runs the module: its stage-1 run, setups and subprocess runs (sharing `jax_cache`)
# are made once.
pytestmark = pytest.mark.xdist_group("finetune")


@pytest.fixture(scope="session")
def stage1(stage1_run):
    return stage1_run


def quick_config(corpus, stage1_dir, steps: int = 100):
    cfg = stage2_demo.get_config("quick")
    cfg.data.dir, cfg.stage1.workdir = str(corpus), str(stage1_dir)
    cfg.train.steps = steps  # the schedule's length: the lr stays near its peak over a few steps
    cfg.optim.lr = 3e-3
    return cfg


def flat(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def first_batch_of(setup: finetune.Stage2, examples: stage2.Examples) -> dict[str, np.ndarray]:
    data = stage2.train_dataset(examples, seed=0, local_batch=setup.cfg.data.batch_size, process_index=0,
                                process_count=1)
    return next(iter(data))


def first_batch(setup: finetune.Stage2) -> dict[str, np.ndarray]:
    return first_batch_of(setup, setup.examples("train"))


# Session scope (here and for `finetuned`): xdist may run another module's tests between this
# group's, which would tear a module fixture down and compute it again.
@pytest.fixture(scope="session")
def one_device(synth_corpus, stage1, tmp_path_factory):
    """The quick setup on one device and six steps of its jitted train step on its first batch
    (one compile, shared): the initial state, each step's metrics, the optimizer state after the
    first step (host copies) and the final state."""
    workdir = tmp_path_factory.mktemp("one_device")
    mesh = sharding.make_mesh((("data", -1), ("fsdp", 1), ("tensor", 1)), devices=jax.devices()[:1])
    setup = finetune.Stage2(quick_config(synth_corpus, stage1), str(workdir), mesh)
    state = setup.init_state()
    copy = lambda tree: {k: np.array(v) for k, v in flat(tree).items()}  # noqa: E731  (the step donates the state)
    initial = {"params": copy(state["params"]), "frozen": copy(state["frozen"]["encoder"]), "opt": copy(state["opt"])}
    batch = first_batch(setup)
    step = setup.jit_train_step()
    metrics, opt_after_first = [], None
    for _ in range(6):
        state, m = step(state, sharding.global_batch({k: batch[k] for k in setup.step_fields}, mesh))
        metrics.append(jax.device_get(m))
        if opt_after_first is None:
            opt_after_first = copy(state["opt"])
    return {"setup": setup, "workdir": workdir, "initial": initial, "batch": batch, "metrics": metrics,
            "opt_after_first": opt_after_first, "state": state}


def test_frozen_encoder_learning_and_generation(one_device, stage1):
    """No optimizer state for the encoder, its parameters bit-identical after steps (and equal to
    the stage-1 checkpoint's), the loss falls on a fixed batch, greedy generation runs under jit."""
    setup, state, initial = one_device["setup"], one_device["state"], one_device["initial"]
    assert (one_device["workdir"] / "tokenizer.json").exists()
    assert set(state["params"]) == {"projector", "lm"} and set(state["frozen"]) == {"encoder"}
    assert not [k for k in initial["opt"] if "encoder" in k]
    assert len(initial["opt"]) >= 2 * len(initial["params"])  # Adam's two moments of the trainable part
    saved = {k.replace("'", ""): v for k, v in final_state(stage1, 2).items()}  # orbax keys lists by strings
    encoder = initial["frozen"]
    assert all(np.array_equal(saved["[params]" + k.replace("'", "")], v) for k, v in encoder.items())

    batch, m = one_device["batch"], one_device["metrics"][-1]
    losses = [float(step["loss"]) for step in one_device["metrics"]]
    assert float(m["answer_tokens"]) > 0 and all(np.isfinite(losses))
    assert losses[-1] < 0.85 * losses[0] and losses == sorted(losses, reverse=True), losses
    assert compare(encoder, flat(state["frozen"]["encoder"])).startswith("bitwise equal")

    embeds, mask = setup._prefix(state, {k: batch[k] for k in (*stage2.ENCODER_FIELDS, "prompt_ids", "prompt_mask")})
    tokens = decoder.generate(setup.modules(state)[2], embeds, mask, 6, eos_id=setup.codec.eos_id)
    assert tokens.shape == (batch["input_ids"].shape[0], 6) and tokens.dtype == np.int32
    assert isinstance(tokens, jax.Array)
    assert all(isinstance(a, str) for a in setup.answer(state, batch, 6))

    # The blind twin's prefix is the prompt alone: no visual position, the text embedded as is.
    prompt = {k: batch[k] for k in (*stage2.ENCODER_FIELDS, "prompt_ids", "prompt_mask")}
    blind, blind_mask = setup._prefix(state, prompt, True)
    assert blind.shape[1] == batch["prompt_ids"].shape[1] < embeds.shape[1]
    np.testing.assert_array_equal(blind_mask, batch["prompt_mask"])
    np.testing.assert_allclose(blind, setup.modules(state)[2].embed(batch["prompt_ids"]), rtol=1e-6)


def test_document_read_across_chunks(synth_corpus, stage1, tmp_path):
    """A document of several chunks (one page each here) is read with the memory carried: the
    memory tokens the LM sees are those of stage 1's model called chunk after chunk with its
    memory passed on (the padding chunks after the document leave it as it is), and the window
    tokens are those of the chunk holding the page the prompt names, with that page's embedding."""
    cfg = quick_config(synth_corpus, stage1)
    cfg.data.max_steps, cfg.data.max_pages, cfg.data.max_chunks = 12, 1, 4
    setup = finetune.Stage2(cfg, str(tmp_path), sharding.make_mesh(cfg.mesh, devices=jax.devices()[:1]))
    examples = setup.examples("train")
    ex = next(e for e in map(examples, range(len(examples.index)))
              if 1 < e["step_mask"].any(axis=1).sum() < 4 and 0 < e["focus"] < e["step_mask"].any(axis=1).sum() - 1)
    state = setup.init_state()
    batch = {k: ex[k][None] for k in stage2.ENCODER_FIELDS}
    tokens, mask, page = jax.jit(lambda st, b: setup.visual(setup.modules(st)[0], b))(state, batch)

    encoder, memory, focus, seen = setup.modules(state)[0], None, int(ex["focus"]), []
    for k in range(int(ex["step_mask"].any(axis=1).sum())):
        out = encoder(*(ex[f][k][None] for f in ("patches", "step_mask", "page_ids", "window_box")), max_pages=1,
                      memory=memory, ttm_tokens=True)
        memory = out["memory"]
        seen.append(out["tokens"])
    seen = seen[focus]
    m, real = memory.shape[1], int(ex["step_mask"][focus].sum())
    np.testing.assert_allclose(tokens[0, -m:], memory[0], rtol=1e-5, atol=1e-6)
    r = seen.shape[2]
    np.testing.assert_allclose(tokens[0, : real * r], np.asarray(seen[0, :real]).reshape(real * r, -1), rtol=1e-5,
                               atol=1e-6)
    assert mask[0, : real * r].all() and not mask[0, real * r : -m].any() and mask[0, -m:].all()
    prompt = setup.codec.decode(ex["prompt_ids"][ex["prompt_mask"]])
    assert f"page {focus + 1}." in prompt and (np.asarray(page[0, : real * r]) == focus).all()
    assert (np.asarray(page[0, -m:]) == cfg.data.max_chunks * cfg.data.max_pages).all()


def test_cached_visual_tokens_are_the_steps(one_device):
    """`Stage2.cache_visual` (the encoder once per document, on the 8 local devices) gives the tokens
    the step computes from pixels (float32, up to the last bits of other rows per device), and the
    loss the LM reads from them; a batch of the cache carries no pixels."""
    setup, state = one_device["setup"], one_device["state"]
    examples = setup.examples("train")
    setup.cache_visual(state, examples, np.arange(len(examples.index)))
    cached = first_batch_of(setup, examples)
    pixels = first_batch(setup)
    assert "patches" not in cached and set(stage2.VISUAL_FIELDS) <= set(cached)
    np.testing.assert_array_equal(cached["input_ids"], pixels["input_ids"])  # the same pairs
    mesh = setup.mesh
    enc = jax.jit(lambda st, b: setup.visual(setup.modules(st)[0], b))
    from_pixels = jax.device_get(enc(state, sharding.global_batch({k: pixels[k] for k in stage2.ENCODER_FIELDS},
                                                                  mesh)))
    np.testing.assert_allclose(cached["visual"], from_pixels[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cached["visual_mask"], from_pixels[1])
    np.testing.assert_array_equal(cached["visual_page"], from_pixels[2])
    loss = jax.jit(lambda st, v, b: bridge.answer_loss(*setup.modules(st)[1:], v, b)[0])
    text = {k: pixels[k] for k in ("input_ids", "text_mask", "loss_mask")}
    assert float(loss(state, tuple(cached[k] for k in stage2.VISUAL_FIELDS), text)) == pytest.approx(
        float(loss(state, from_pixels, text)), rel=1e-5)


def test_sharded_step_equals_one_device(synth_corpus, stage1, one_device, tmp_path):
    """The step on 8 devices (fsdp 2 x tensor 4: the batch of 2 split over fsdp, weights over both)
    computes the loss and gradients of the one-device step (the shared one's first step): Adam's
    state after it (its first moment holds (1 - b1) x the clipped gradient, whatever the learning
    rate) is compared leaf by leaf in float32 (the reductions run in another order)."""
    mesh = sharding.make_mesh((("data", 1), ("fsdp", 2), ("tensor", 4)), devices=jax.devices()[:8])
    setup = finetune.Stage2(quick_config(synth_corpus, stage1), str(tmp_path / "sharded"), mesh)
    batch = first_batch(setup)
    np.testing.assert_array_equal(batch["input_ids"], one_device["batch"]["input_ids"])
    state, m = setup.jit_train_step()(setup.init_state(),
                                      sharding.global_batch({k: batch[k] for k in setup.step_fields}, mesh))
    loss_one, opt_one = float(one_device["metrics"][0]["loss"]), one_device["opt_after_first"]
    loss_sharded, opt_sharded = float(m["loss"]), flat(state["opt"])
    assert loss_sharded == pytest.approx(loss_one, rel=1e-5)
    assert opt_one.keys() == opt_sharded.keys()
    assert max(float(np.abs(v).max()) for v in opt_one.values() if v.size) > 0  # gradients were recorded
    for k in opt_one:
        np.testing.assert_allclose(opt_sharded[k], opt_one[k], rtol=1e-4, atol=1e-7, err_msg=k)


def test_lora_trains_adapters_only(synth_corpus, stage1, one_device, tmp_path):
    """With LoRA the LM joins the frozen part: the optimizer holds the projector and adapters only,
    and the adapters start at zero (the first forward is the loaded LM's)."""
    lm_dir = tmp_path / "lm"
    cfg = quick_config(synth_corpus, stage1)
    mesh = sharding.make_mesh(cfg.mesh, devices=jax.devices()[:1])
    write_hf_checkpoint(one_device["setup"], lm_dir)  # the embedded LM of the quick setup
    cfg.lm.model_dir, cfg.lm.finetune = str(lm_dir), "lora"
    setup = finetune.Stage2(cfg, str(tmp_path / "lora"), mesh)
    state = setup.init_state()
    assert set(state["params"]) == {"projector", "lora"} and set(state["frozen"]) == {"encoder", "lm"}
    assert not [k for k in flat(state["opt"]) if "encoder" in k or "['lm']" in k]
    merged = flat(setup.modules(state)[2].layers[0].self_attn.q_proj.kernel[...])
    base = flat(state["frozen"]["lm"]["layers"][0]["self_attn"]["q_proj"]["kernel"])
    assert compare(merged, base).startswith("bitwise equal")
    lm_before = flat(state["frozen"]["lm"])
    batch = first_batch(setup)
    state, m = setup.jit_train_step()(state, sharding.global_batch({k: batch[k] for k in setup.step_fields}, mesh))
    assert np.isfinite(float(m["loss"]))
    assert compare(lm_before, flat(state["frozen"]["lm"])).startswith("bitwise equal")
    assert any(np.abs(v).max() > 0 for k, v in flat(state["params"]["lora"]).items() if k.endswith("['b']"))


def write_hf_checkpoint(setup: finetune.Stage2, out) -> None:
    """The embedded LM at initialisation as a Hugging Face Llama directory (what lm.model_dir reads)."""
    from safetensors.numpy import save_file

    out.mkdir()
    lm, cfg = setup.modules(setup.init_state())[2], setup.lm_cfg
    tensors = {}
    leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(lm, nnx.Param)))[0]
    for path, v in leaves:
        name, transpose = decoder._hf_key(tuple(getattr(k, "key", getattr(k, "idx", None)) for k in path))
        tensors[name] = np.ascontiguousarray(np.asarray(v).T if transpose else np.asarray(v))
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads, "tie_word_embeddings": True,
        "eos_token_id": setup.codec.eos_id, "pad_token_id": setup.codec.pad_id}))
    setup.codec.tokenizer.save(str(out / "tokenizer.json"))


def finetune_cmd(corpus, stage1_dir, workdir, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "docjepa.finetune", "--config", "configs/stage2_demo.py:quick",
            f"--config.data.dir={corpus}", f"--config.stage1.workdir={stage1_dir}", f"--workdir={workdir}",
            f"--config.train.steps={steps}", *extra]


STEPS = 6  # the CLI runs': checkpoints at 2, 4 and 6


@pytest.fixture(scope="session")
def finetuned(synth_corpus, stage1, tmp_path_factory, jax_cache):
    """`python -m docjepa.finetune` for STEPS steps, uninterrupted."""
    workdir = tmp_path_factory.mktemp("stage2")
    r = train_utils.run(finetune_cmd(synth_corpus, stage1, workdir, STEPS), cache=jax_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    return workdir


def test_cli_sigterm_and_kill9_resume_bitwise(synth_corpus, stage1, finetuned, tmp_path, jax_cache):
    """A run stopped by SIGTERM saves its current step and exits 0; resumed, then killed with SIGKILL
    between the checkpoints of steps 4 and 6 and resumed again (from step 4 and its data position),
    its trainable parameters end bitwise equal to those of the uninterrupted run."""
    cmd = lambda every: finetune_cmd(synth_corpus, stage1, tmp_path, STEPS,  # noqa: E731
                                     f"--config.train.ckpt_every={every}")
    start = lambda every: subprocess.Popen(cmd(every), cwd=train_utils.ROOT,  # noqa: E731
                                           env=train_utils.env(cache=jax_cache), stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE, text=True)
    proc = start(1000)  # no periodic checkpoint: only SIGTERM saves
    train_utils.wait_for_step(tmp_path, 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    stopped = train_utils.checkpoint_steps(tmp_path)
    assert len(stopped) == 1 and stopped[0] < 4 and f"SIGTERM: saving step {stopped[0]}" in err, err[-3000:]

    proc = start(2)
    train_utils.wait_for_step(tmp_path, 5, proc)
    proc.kill()
    _, err = proc.communicate(timeout=300)
    assert f"resumed from step {stopped[0]}" in err, err[-3000:]
    assert 4 in train_utils.checkpoint_steps(tmp_path) and 6 not in train_utils.checkpoint_steps(tmp_path)

    r = train_utils.run(cmd(2), cache=jax_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from step 4" in r.stderr
    assert compare(final_state(finetuned, STEPS), final_state(tmp_path, STEPS)).startswith("bitwise equal")


def test_cli_cached_visual_resume_bitwise(synth_corpus, stage1, tmp_path, jax_cache):
    """With the visual tokens cached (the demo's setting, `bridge.cache_visual`), a run resumed from
    its step-4 checkpoint (the later one removed, as a kill after it would leave it) builds the
    cache again and ends bitwise where it ended before. (Its steps are too quick on this config
    for a signal to land between checkpoints; the signals are tested above on the pixel path.)"""
    cmd = finetune_cmd(synth_corpus, stage1, tmp_path, STEPS, "--config.bridge.cache_visual=True")
    r = train_utils.run(cmd, cache=jax_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "visual tokens of" in r.stderr and train_utils.checkpoint_steps(tmp_path) == [2, 4, 6]
    straight = final_state(tmp_path, STEPS)
    shutil.rmtree(tmp_path / "checkpoints" / str(STEPS))
    r = train_utils.run(cmd, cache=jax_cache)
    assert r.returncode == 0 and "resumed from step 4" in r.stderr, r.stderr[-3000:]
    assert compare(straight, final_state(tmp_path, STEPS)).startswith("bitwise equal")


def test_cli_eval(synth_corpus, stage1, finetuned, jax_cache):
    """`--eval` answers validation pairs by greedy decoding and writes each task's JSON validity
    and metrics to W/eval/step_6.json, for the model and its twins (blind, random encoder) on the
    same pairs, and every answer (with the twins') to step_6_answers.jsonl; it prints one table."""
    r = train_utils.run(finetune_cmd(synth_corpus, stage1, finetuned, STEPS, "--eval"), cache=jax_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((finetuned / "eval" / f"step_{STEPS}.json").read_text())
    assert result["step"] == STEPS and result["tasks"]
    metrics = {"ocr": {"word_f1", "cer", "wer"}, "qa": {"exact_match", "anls"}, "layout": {"layout_f1"},
               "ner": {"entity_f1"}}
    for task, row in result["tasks"].items():
        assert task in tasks.TASKS and row["examples"] > 0 and 0 <= row["valid"] <= 1
        assert set(row) == {"examples", "valid", *metrics[task]}
    for twin in ("blind", "random_encoder"):
        assert {t: r["examples"] for t, r in result[twin].items()} == {
            t: r["examples"] for t, r in result["tasks"].items()}
        assert all(set(result[twin][t]) == set(result["tasks"][t]) for t in result["tasks"])
    rows = [json.loads(line) for line in (finetuned / "eval" / f"step_{STEPS}_answers.jsonl").read_text().splitlines()]
    assert sum(r["examples"] for r in result["tasks"].values()) == len(rows) == 4  # evals.max_examples
    assert all(isinstance(row[twin]["predicted"], str) for row in rows for twin in ("blind", "random_encoder"))
    table = r.stdout.splitlines()
    assert table[0] == "| task | metric | model | blind | random_encoder |"
    assert len(table) == 2 + sum(len(row) for row in result["tasks"].values())


def test_cli_refuses_missing_stage1(synth_corpus, tmp_path):
    r = train_utils.run([sys.executable, "-m", "docjepa.finetune", "--config", "configs/stage2_demo.py:quick",
                         f"--config.data.dir={synth_corpus}", "--config.stage1.workdir=", f"--workdir={tmp_path}"])
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: config.stage1.workdir")


def test_embedded_tokenizer_spells_each_box_number_as_one_token():
    """Every whole number 0..BOX_SCALE is one token wherever it stands alone, so a box is always
    four number tokens; numbers inside longer ones are left to BPE; any text round-trips."""
    texts = ['{"elements":[{"category":"title","box":[126,66,871,118]}]}', "Total due $1,234.50 on 2024-05-01."] * 20
    codec = stage2.train_tokenizer(iter(texts), 300)
    for box in ([126, 66, 871, 118], [0, 7, 999, 1000], [5, 40, 300, 1000]):
        pieces = [codec.decode([i]) for i in codec.encode(json.dumps({"box": box}, separators=(",", ":")))]
        assert [p for p in pieces if any(c.isdigit() for c in p)] == [str(v) for v in box]
    for number in ("1001", "2024", "10000"):  # beyond BOX_SCALE, or holding one inside: BPE's own pieces
        assert codec.encode(number) == [t.id for t in codec.tokenizer.model.tokenize(number)]
        assert len(codec.encode(number)) > 1
    for text in [*texts, " 42 ", "a1000 x7 12.5.1999", "ünïcode 3-4 -5"]:
        assert codec.decode(codec.encode(text)) == text


def test_answer_scores():
    """Invalid JSON scores 0 on the task's metric (an error rate of 1: nothing read); OCR F1 is
    over word multisets; QA is exact."""
    truth = json.dumps({"lines": ["Total due", "$12.00"]})
    assert answers.score("ocr", truth, truth) == {"valid": 1.0, "word_f1": 1.0, "cer": 0.0, "wer": 0.0}
    assert answers.score("ocr", json.dumps({"lines": ["Total $12.00 extra"]}), truth)["word_f1"] == pytest.approx(
        2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert answers.score("ocr", '{"lines": ["Total due"', truth) == {"valid": 0.0, "word_f1": 0.0, "cer": 1.0,
                                                                       "wer": 1.0}
    qa = json.dumps({"answer": "$12.00", "page": 1})
    assert answers.score("qa", qa, qa) == {"valid": 1.0, "exact_match": 1.0, "anls": 1.0}
    near = answers.score("qa", json.dumps({"answer": "$12", "page": 1}), qa)
    assert near["exact_match"] == 0.0 and near["anls"] == 0.0  # distance 3 of 6: not below 0.5
    assert answers.score("qa", '{"answer": "$12.00"}', qa) == {"valid": 0.0, "exact_match": 0.0, "anls": 0.0}
    assert answers.score("layout", '{"elements": []}', '{"elements": []}') == {"valid": 1.0, "layout_f1": 1.0}
    assert answers.score("ner", '{"entities": [{"type": "ORG"}]}', '{"entities": []}') == {"valid": 0.0,
                                                                                           "entity_f1": 0.0}
    summary = answers.summarize([("qa", {"valid": 1.0, "exact_match": 1.0}), ("qa", {"valid": 0.0, "exact_match": 0.0})])
    assert summary == {"qa": {"examples": 2, "valid": 0.5, "exact_match": 0.5}}


def test_edit_distance_cer_wer():
    """Levenshtein distance, by hand: kitten -> sitting is 2 substitutions and 1 insertion."""
    assert answers.edit_distance("kitten", "sitting") == 3
    assert answers.edit_distance("sitting", "kitten") == 3
    assert answers.edit_distance("", "abc") == answers.edit_distance("abc", "") == 3
    assert answers.edit_distance("flaw", "lawn") == 2  # delete f, insert n
    assert answers.edit_distance(["total", "due", "now"], ["total", "now"]) == 1
    # CER over "Total due $12.00" (16 characters): "Tota1 due $12.0" substitutes 1 and deletes 1.
    assert answers.cer(["Tota1 due", "$12.0"], ["Total due", "$12.00"]) == pytest.approx(2 / 16)
    # WER over 3 truth words: one substituted, one inserted; lines and extra spaces do not count.
    assert answers.wer(["Total  dew", "$12.00 extra"], ["Total due $12.00"]) == pytest.approx(2 / 3)
    assert answers.wer([], ["a b"]) == 1.0 and answers.cer(["x"], []) == 1.0


def test_anls():
    """ANLS (threshold 0.5): 1 - distance / longer length when that is below 0.5, else 0;
    lower-cased, outer whitespace ignored."""
    assert answers.anls(" Kim Analytics ", "kim analytics") == 1.0
    assert answers.anls("$1,234.5", "$1,234.56") == pytest.approx(1 - 1 / 9)
    assert answers.anls("abcd", "abxy") == 0.0  # 2 / 4 = 0.5 is not below the threshold
    assert answers.anls("abcde", "abxye") == pytest.approx(0.6)


def test_layout_f1():
    """One-to-one matches of the same category at IoU >= 0.5."""
    assert answers.iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    truth = [{"category": "title", "box": [0, 0, 100, 100]}, {"category": "paragraph", "box": [0, 200, 100, 300]}]
    shifted = {"category": "title", "box": [20, 0, 120, 100]}  # IoU 80 / 120
    assert answers.layout_f1([shifted], truth) == pytest.approx(2 * 1 * 0.5 / 1.5)
    # Two predictions of the one title: only one matches (precision 1/3, recall 1/2).
    twice = [shifted, {"category": "title", "box": [0, 0, 100, 100]}, {"category": "table", "box": [0, 200, 100, 300]}]
    assert answers.layout_f1(twice, truth) == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert answers.layout_f1([{"category": "title", "box": [50, 0, 150, 100]}], truth[:1]) == 0.0  # IoU 1/3
    assert answers.layout_f1([], truth) == 0.0 and answers.layout_f1([], []) == 1.0


def test_entity_f1():
    """Exact (type, text) pairs, as multisets."""
    truth = [{"type": "ORG", "text": "Kim Analytics"}, {"type": "DATE", "text": "2019-03-01"},
             {"type": "ORG", "text": "Kim Analytics"}]
    predicted = [{"type": "ORG", "text": "Kim Analytics"}, {"type": "PERSON", "text": "Kim Analytics"},
                 {"type": "DATE", "text": "2019-03-01"}, {"type": "DATE", "text": "2019-03-01"}]
    # matched: ORG once, DATE once -> precision 2/4, recall 2/3
    assert answers.entity_f1(predicted, truth) == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert answers.entity_f1([], []) == 1.0


def generate_cmd(workdir, *args: str) -> list[str]:
    return [sys.executable, "-m", "docjepa.generate", f"--workdir={workdir}", *args]


def test_generate_cli(finetuned, tmp_path, jax_cache):
    """`python -m docjepa.generate` reads a PDF as prepare does and prints one line: the task's
    answer, parsed when it is valid JSON of the schema, else the decoded text and why not (what a
    6-step model says is not checked). A bad command line, file or workdir is one line, exit 2."""
    pdf = tmp_path / "invoice.pdf"
    content = lambda k: b" ".join([pdf_factory.text(60, 700, f"Invoice INV-2019-0004{k}", 20),  # noqa: E731
                                   pdf_factory.text(60, 660, f"Total due: 1{k}.00 USD", 14)])
    pdf.write_bytes(pdf_factory.build_pdf([(b"/MediaBox [0 0 612 792]", content(k)) for k in range(3)]))
    # 3 pages: 2 chunks of the quick config's 2 pages, more than the data.max_chunks = 1 it trained on
    r = train_utils.run(generate_cmd(finetuned, f"--pdf={pdf}", "--task=ocr", "--page=3"), cache=jax_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    out = json.loads(lines[0])
    assert out["task"] == "ocr" and out["page"] == 3 and isinstance(out["valid"], bool)
    if out["valid"]:
        tasks.check(tasks.SCHEMAS["ocr"], out["answer"])
    else:
        assert isinstance(out["answer"], str) and out["error"]

    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 nothing else")
    bad = {"unknown task": (finetuned, f"--pdf={pdf}", "--task=summary"),
           "qa without a question": (finetuned, f"--pdf={pdf}", "--task=qa"),
           "missing workdir": (tmp_path / "none", f"--pdf={pdf}", "--task=ocr"),
           "bad file": (finetuned, f"--pdf={broken}", "--task=ocr"),
           "page beyond the document": (finetuned, f"--pdf={pdf}", "--task=ner", "--page=4")}
    for why, (workdir, *args) in bad.items():
        r = train_utils.run(generate_cmd(workdir, *args))
        assert r.returncode == 2 and not r.stdout, (why, r.stdout, r.stderr[-2000:])
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: --"), (why, r.stderr)

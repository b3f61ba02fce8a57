"""Pseudo-layout masks (data/pseudo_layout.py) and the focal-loss layout term (SelfDocSeg)."""

import numpy as np
import pytest

from configs import demo
from docjepa import objective, state as factory, validate
from docjepa.data import ocr, pipeline, pseudo_layout
from docjepa.evals.common import mean_iou


def test_masks_follow_the_generators_layout_on_any_paper(synth_corpus):
    """Against the synthetic generator's exact layout boxes, on the pages as stored: the mask
    finds the regions (mean IoU well above a mask of all background or all region), on light
    paper and on the same page inverted (a dark slide)."""
    n = pipeline.read_manifest(synth_corpus)["splits"]["train"]["documents"]
    ious, trivial, inverted = [], [], []
    for i in range(min(6, n)):
        rec = pipeline.load_record(str(synth_corpus), "train", i)
        doc = ocr.Document.from_json(rec["ocr_json"])
        for p, page in enumerate(rec["pages"]):
            true = pseudo_layout.true_mask([el.box for el in doc.pages[p].layout], page.shape[:2])
            mask = pseudo_layout.page_mask(page)
            assert mask.shape == page.shape[:2] and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
            ious.append(mean_iou(mask, true, 2)[0])
            trivial.append(max(mean_iou(np.zeros_like(true), true, 2)[0], mean_iou(np.ones_like(true), true, 2)[0]))
            inverted.append(mean_iou(pseudo_layout.page_mask(255 - page), mask, 2)[0])
    assert len(ious) >= 4
    assert np.mean(ious) > 0.6 and np.mean(ious) > np.mean(trivial) + 0.2, (np.mean(ious), np.mean(trivial))
    assert np.mean(inverted) > 0.9, inverted


def test_blank_page_and_cells():
    assert not pseudo_layout.page_mask(np.full((300, 200, 3), 250, np.uint8)).any()
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, :4, :4] = 1      # the top-left cell of a 2 x 2 grid, whole
    masks[1, :1, :] = 1       # a quarter of each top cell: under half
    cells = pseudo_layout.cell_targets(masks, 2)
    np.testing.assert_array_equal(cells, [[[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    with pytest.raises(ValueError, match="3x3 cells"):
        pseudo_layout.cell_targets(masks, 3)


def test_pipeline_cuts_the_page_mask_like_the_pixels(synth_corpus):
    batch = next(pipeline.eval_batches(str(synth_corpus), "train", batch_size=2, max_steps=4, max_pages=2,
                                       min_words=3, center=True, layout_grid=28))
    assert batch["layout_mask"].shape == (2, 4, 28, 28)
    rec = pipeline.load_record(str(synth_corpus), "train", int(batch["record_index"][0]))
    page, x0, y0, x1, y1 = batch["window_rows"][0, 0]
    want = pseudo_layout.cell_targets(pseudo_layout.page_mask(rec["pages"][page])[y0:y1, x0:x1], 28)
    np.testing.assert_array_equal(batch["layout_mask"][0, 0], want)
    assert batch["layout_mask"][batch["step_mask"]].any()
    with pytest.raises(pipeline.DataError, match="data.layout_grid"):
        pipeline.eval_batches(str(synth_corpus), "train", batch_size=2, max_steps=4, max_pages=2, min_words=3,
                              center=True, layout_grid=30)


def test_layout_term_reads_the_heads_map_and_names_a_wrong_grid():
    cfg = demo.get_config("quick")
    cfg.loss.layout_weight, cfg.data.layout_grid = 1.0, 28
    cfg.model.hiera.overrides.embed_dim = 16
    model = factory.build_model(cfg, 8, 0)
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (1, 2, 224, 224, 3), dtype=np.uint8)
    step_mask = np.array([[True, False]])
    out = model(patches, step_mask, np.array([[0, -1]]), np.tile([0.0, 0.0, 0.5, 0.5], (1, 2, 1)), max_pages=2)
    assert out["layout"].shape == (1, 2, 28, 28)  # stage 1 of a 224-px window: 56 / 2 tokens a side
    target = (rng.random((1, 2, 28, 28)) > 0.5).astype(np.uint8)
    loss = objective.TERMS["loss/layout"].fn(model, out, {"layout_mask": target, "step_mask": step_mask}, cfg.loss,
                                             None, None)
    assert np.isfinite(float(loss)) and float(loss) > 0
    # Padding steps take no part: changing their targets changes nothing.
    target[0, 1] = 1 - target[0, 1]
    again = objective.TERMS["loss/layout"].fn(model, out, {"layout_mask": target, "step_mask": step_mask}, cfg.loss,
                                              None, None)
    assert float(again) == float(loss)
    with pytest.raises(ValueError, match="data.layout_grid"):
        objective.TERMS["loss/layout"].fn(model, out, {"layout_mask": target[..., :14, :14], "step_mask": step_mask},
                                          cfg.loss, None, None)
    assert "layout_mask" in factory.step_fields(cfg)
    cfg.data.layout_grid = 0
    with pytest.raises(validate.ConfigError, match="config.data.layout_grid"):
        validate.check(cfg, "train")

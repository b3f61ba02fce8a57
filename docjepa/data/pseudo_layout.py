"""Pseudo-layout masks: a page's physical layout from classical image processing, no labels.

SelfDocSeg (Maity et al. 2023) trains document layout features without annotations by
turning each page into a binary mask of its layout regions with plain image processing and
using the mask as a dense target. The recipe here: ink is every pixel far from the paper's
tone (the page's median grey, so dark slides and tinted paper work as well as white pages),
found by Otsu's threshold on that distance; a dilation whose kernel is a fixed fraction of the
page width merges characters into words, words into lines and lines into blocks; each
connected component that is large enough becomes its bounding box. The mask is 1 inside a
region, 0 on background. It is computed on the decoded page before augmentation, in the data
pipeline (3.5 ms per 448-px page on a 2-core AMD EPYC, BENCHMARKS.md), and cut into windows like the
pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

# Dilation kernel as fractions of the page width (x, y): at 448 px, 9 x 5 px, which bridges the
# gaps between letters, words and the lines of a paragraph (x-height 8 px) but not the margins
# between columns or blocks.
KERNEL = (0.02, 0.011)
MIN_AREA = 0.0005  # components smaller than this fraction of the page (specks, noise) are dropped


def page_mask(page: np.ndarray, kernel: tuple[float, float] = KERNEL, min_area: float = MIN_AREA) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> uint8 [H, W], 1 inside a pseudo-layout region."""
    grey = cv2.cvtColor(page, cv2.COLOR_RGB2GRAY)
    distance = cv2.absdiff(grey, np.full_like(grey, int(np.median(grey))))
    if int(distance.max()) < 16:  # a blank page: no ink, no regions
        return np.zeros(grey.shape, np.uint8)
    _, ink = cv2.threshold(distance, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    h, w = grey.shape
    kx, ky = max(1, round(kernel[0] * w)), max(1, round(kernel[1] * w))
    merged = cv2.dilate(ink, cv2.getStructuringElement(cv2.MORPH_RECT, (kx, ky)))
    n, _, stats, _ = cv2.connectedComponentsWithStats(merged, connectivity=8)
    out = np.zeros((h, w), np.uint8)
    for x, y, bw, bh, area in stats[1:n]:
        if area >= min_area * h * w:
            out[y : y + bh, x : x + bw] = 1
    return out


def cell_targets(masks: np.ndarray, grid: int) -> np.ndarray:
    """Window masks uint8 [..., H, W] -> [..., grid, grid] uint8: 1 where at least half of the
    cell lies in a region (the target of one token of a `grid` x `grid` feature map)."""
    *lead, h, w = masks.shape
    if h % grid or w % grid:
        raise ValueError(f"pseudo_layout.cell_targets: a {h}x{w} window does not split into {grid}x{grid} cells")
    cells = masks.reshape(*lead, grid, h // grid, grid, w // grid).mean(axis=(-3, -1))
    return (cells >= 0.5).astype(np.uint8)


def true_mask(boxes: list[tuple[float, float, float, float]], shape: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W], 1 inside any of `boxes` (x0, y0, x1, y1 px): the mask a page's true layout
    (the synthetic generator's, `ocr.Page.layout`) gives, to score `page_mask` against."""
    out = np.zeros(shape, np.uint8)
    for box in boxes:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        out[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = 1
    return out


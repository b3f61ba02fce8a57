"""Figures: charts and diagrams with no text inside, so the words of a page stay exactly known."""

from __future__ import annotations

import numpy as np
from PIL import ImageDraw

from docjepa.data.synth.page import Box
from docjepa.data.synth.style import Colour

_CHART_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                  (140, 86, 75), (127, 127, 127), (23, 190, 207))


def _chart(rng: np.random.Generator, draw: ImageDraw.ImageDraw, box: Box, ink: Colour, paper: Colour) -> None:
    """A bar, line, scatter or pie chart, or a box-and-arrow diagram, drawn inside box."""
    x0, y0, x1, y1 = box
    colours = [_CHART_COLOURS[i] for i in rng.permutation(len(_CHART_COLOURS))]
    kind = ("bar", "line", "scatter", "pie", "diagram")[int(rng.integers(5))]
    if kind == "pie":
        r = min(x1 - x0, y1 - y0) / 2 - 4
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        start = -90.0
        for i, f in enumerate(rng.dirichlet(np.ones(int(rng.integers(3, 7))) * 2)):
            draw.pieslice((cx - r, cy - r, cx + r, cy + r), start, start + 360 * f, fill=colours[i], outline=paper)
            start += 360 * f
        return
    if kind == "diagram":  # boxes joined by arrows, snaking row by row
        cols, rows = int(rng.integers(3, 6)), int(rng.integers(1, 4))
        cw, ch = (x1 - x0) / cols, (y1 - y0) / rows
        bw, bh = cw * 0.62, min(ch * 0.6, cw * 0.8)
        centres = [(x0 + (c if r % 2 == 0 else cols - 1 - c) * cw + cw / 2, y0 + r * ch + ch / 2)
                   for r in range(rows) for c in range(cols)]
        for i, (cx, cy) in enumerate(centres):
            tint = tuple(int(255 - (255 - v) * 0.35) for v in colours[i % len(colours)])
            draw.rounded_rectangle((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), radius=6, outline=ink,
                                   width=2, fill=tint)
        for (ax, ay), (bx, by) in zip(centres, centres[1:]):
            if ay == by:  # along a row
                sx = 1 if bx > ax else -1
                start, end = (ax + sx * (bw / 2 + 3), ay), (bx - sx * (bw / 2 + 3), by)
                head = ((end[0], end[1]), (end[0] - sx * 7, end[1] - 4), (end[0] - sx * 7, end[1] + 4))
            else:  # down to the next row
                start, end = (ax, ay + bh / 2 + 3), (bx, by - bh / 2 - 3)
                head = ((end[0], end[1]), (end[0] - 4, end[1] - 7), (end[0] + 4, end[1] - 7))
            draw.line((start, end), fill=ink, width=2)
            draw.polygon(head, fill=ink)
        return
    pad = 10
    ax0, ay0, ax1, ay1 = x0 + pad, y0 + pad, x1 - pad, y1 - pad
    grey = tuple(int(v * 0.85) for v in paper)
    for k in range(1, 5):
        gy = ay1 - (ay1 - ay0) * k / 5
        draw.line((ax0, gy, ax1, gy), fill=grey, width=1)
    if kind == "bar":
        groups, series = int(rng.integers(3, 9)), int(rng.integers(1, 4))
        gw = (ax1 - ax0) / groups
        bw = gw * 0.7 / series
        for g in range(groups):
            for s in range(series):
                top = ay1 - (ay1 - ay0) * float(rng.uniform(0.1, 0.95))
                bx = ax0 + g * gw + gw * 0.15 + s * bw
                draw.rectangle((bx, top, bx + bw - 1, ay1), fill=colours[s])
    elif kind == "line":
        n = int(rng.integers(6, 20))
        xs = np.linspace(ax0 + 4, ax1 - 4, n)
        for s in range(int(rng.integers(1, 4))):
            walk = np.cumsum(rng.normal(0, 1, n))
            walk = (walk - walk.min()) / (np.ptp(walk) + 1e-6)
            ys = ay1 - 4 - walk * (ay1 - ay0 - 8) * float(rng.uniform(0.5, 1.0))
            pts = list(zip(xs.tolist(), ys.tolist()))
            draw.line(pts, fill=colours[s], width=2)
            if rng.random() < 0.5:
                for px, py in pts:
                    draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colours[s])
    else:
        for s in range(int(rng.integers(1, 4))):
            centre = rng.uniform(0.2, 0.8, 2)
            pts = np.clip(centre + rng.normal(0, 0.12, (int(rng.integers(15, 40)), 2)), 0.02, 0.98)
            for px, py in pts:
                cx, cy = ax0 + px * (ax1 - ax0), ay1 - py * (ay1 - ay0)
                draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=colours[s])
    draw.line(((ax0, ay0), (ax0, ay1), (ax1, ay1)), fill=ink, width=2)

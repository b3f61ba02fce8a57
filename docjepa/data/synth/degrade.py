"""Scan-like degradations applied after layout; the word and layout boxes follow the tilt."""

from __future__ import annotations

import cv2
import numpy as np

from docjepa.data.synth.style import _Style


def _rotate_boxes(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Axis-aligned boxes enclosing the rotated corners of boxes [n, 4]."""
    x0, y0, x1, y1 = boxes.T
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1), np.stack([x0, y1], -1),
                        np.stack([x1, y1], -1)], 1)  # [n, 4, 2]
    moved = corners @ m[:, :2].T + m[:, 2]
    return np.concatenate([moved.min(1), moved.max(1)], -1)


def _degrade(rng: np.random.Generator, image: np.ndarray, boxes: np.ndarray, style: _Style
             ) -> tuple[np.ndarray, np.ndarray]:
    """Scan-like tilt, uneven light, blur, noise and JPEG; boxes follow the tilt."""
    h, w = image.shape[:2]
    if style.scan:
        angle = float(rng.uniform(-1.0, 1.0))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=style.paper)
        if len(boxes):
            boxes = _rotate_boxes(boxes, m)
        light = np.linspace(1.0 - float(rng.uniform(0, 0.06)), 1.0, h if rng.random() < 0.5 else w, dtype=np.float32)
        light = light[:, None] if light.shape[0] == h else light[None, :]
        sigma = float(rng.uniform(0.3, 0.8))
        img = cv2.GaussianBlur(image, (0, 0), sigma).astype(np.float32) * light[..., None]
        img += rng.standard_normal((h, w), dtype=np.float32)[..., None] * float(rng.uniform(2, 7))
        image = np.clip(img, 0, 255).astype(np.uint8)
    if style.scan or rng.random() < 0.3:
        quality = int(rng.integers(45, 90) if style.scan else rng.integers(75, 95))
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    boxes = np.clip(boxes, 0, [w, h, w, h])
    return np.ascontiguousarray(image), np.round(boxes, 1)

"""Pages to overlapping square windows, and the OCR words that lie under each window.

Pure functions on numpy arrays: `prepare` uses them to build the stored window table and
window texts, the input pipeline to cut the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from docjepa.data.ocr import Word


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")


def resize_to_width(image: np.ndarray, width: int, min_height: int = 224) -> tuple[np.ndarray, float]:
    """Resize to `width` keeping the aspect ratio; pad short pages at the bottom with white.

    Returns the image and the scale factor (new / old) that OCR boxes must follow. INTER_AREA
    avoids aliasing of thin strokes when shrinking; INTER_CUBIC keeps them sharp when growing.
    """
    _check_image(image)
    if width <= 0:
        raise ValueError(f"width: must be > 0, got {width}")
    h, w = image.shape[:2]
    scale = width / w
    new_h = max(1, round(h * scale))
    if (new_h, width) == (h, w):
        out = image.copy()
    else:
        out = cv2.resize(image, (width, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    if new_h < min_height:
        out = cv2.copyMakeBorder(out, 0, min_height - new_h, 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    return out, scale


def _starts(length: int, size: int, stride: int) -> list[int]:
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:  # the last window is flush with the page edge
        starts.append(length - size)
    return starts


def window_boxes(height: int, width: int, size: int = 224, stride: int = 160) -> np.ndarray:
    """int32 [n, 4] (x0, y0, x1, y1) windows covering the page, row-major (reading order)."""
    if size <= 0 or stride <= 0:
        raise ValueError(f"window size and stride must be > 0, got size={size} stride={stride}")
    if height < size or width < size:
        raise ValueError(f"page {width}x{height} is smaller than the {size}x{size} window")
    xs, ys = _starts(width, size, stride), _starts(height, size, stride)
    return np.array([(x, y, x + size, y + size) for y in ys for x in xs], dtype=np.int32)


def assign_words(words: Sequence[Word], windows: np.ndarray) -> list[list[int]]:
    """Per window, the indices of the words whose box centre lies in [x0, x1) x [y0, y1).

    Windows overlap, so a word can belong to several windows. Indices are sorted by reading
    order (Word.order), so that the window text reads like the page.
    """
    windows = np.asarray(windows).reshape(-1, 4)
    if not words:
        return [[] for _ in range(len(windows))]
    boxes = np.array([w.box for w in words], dtype=np.float64)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    x0, y0, x1, y1 = (windows[:, k : k + 1] for k in range(4))
    inside = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)  # [n_windows, n_words]
    by_order = np.argsort(np.array([w.order for w in words]), kind="stable")
    return [by_order[row[by_order]].tolist() for row in inside]


def window_texts(words: Sequence[Word], windows: np.ndarray) -> list[str]:
    """The alignment target of each window: its words in reading order, space-joined."""
    return [" ".join(words[i].text for i in idx) for idx in assign_words(words, windows)]


def cut_windows(image: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """uint8 [n, size, size, C] crops of `image` at `windows` (all windows the same size)."""
    windows = np.asarray(windows).reshape(-1, 4)
    if len(windows) == 0:
        return np.zeros((0, 0, 0, image.shape[-1]), np.uint8)
    sizes = np.concatenate([windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1]])
    if np.any(sizes != sizes[0]) or sizes[0] <= 0:
        raise ValueError("windows: all windows must be squares of one size")
    h, w = image.shape[:2]
    if windows[:, :2].min() < 0 or windows[:, 2].max() > w or windows[:, 3].max() > h:
        raise ValueError(f"windows: a window lies outside the {w}x{h} image")
    return np.stack([image[y0:y1, x0:x1] for x0, y0, x1, y1 in windows.tolist()])

"""Checking annotations of real datasets: bad boxes are fixed or skipped and counted, never a
crash in the middle of training."""
import warnings
from collections import Counter
from typing import Dict, Tuple

import numpy as np


def clean_boxes(boxes: np.ndarray, width: int, height: int, counts: Counter) -> Tuple[np.ndarray, np.ndarray]:
    """Clip ``boxes`` [G, 4] to the image (counted as ``clipped``) and drop those left with no
    area or non-finite (``degenerate``). Returns ``(boxes, keep mask)``."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    finite = np.isfinite(boxes).all(1)
    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0, width)
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0, height)
    moved = finite & (clipped != boxes).any(1)
    keep = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    counts["clipped"] += int((moved & keep).sum())
    counts["degenerate"] += int((~keep).sum())
    return clipped[keep], keep


def report(name: str, counts: Counter) -> Dict[str, int]:
    """Warn once with the counts of fixed/skipped annotations; return them."""
    bad = {k: v for k, v in counts.items() if v}
    if bad:
        warnings.warn(f"{name}: annotations fixed or skipped: {bad}", stacklevel=3)
    return bad

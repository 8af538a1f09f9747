"""Checking annotations of real datasets: bad boxes are fixed or skipped and counted, never a
crash in the middle of training. Counts are keyed by reason (``clipped``, ``degenerate``,
``unknown_class``, and the datasets' own, see :mod:`.voc` and :mod:`.coco`); the warning also
quotes the first few problems, each naming its file or entry and what is wrong."""
import warnings
from collections import Counter
from typing import Dict, List, Tuple

import numpy as np

SHOWN = 5  # problems quoted in the warning; the counts tell how many there were


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


def count_bad(counts: Counter, problems: List[str], reason: str, message: str):
    """Count one bad file or entry under ``reason``; keep ``message`` (which one, what is
    wrong) if it is among the first few."""
    counts[reason] += 1
    if len(problems) < SHOWN:
        problems.append(message)


def report(name: str, counts: Counter, problems: List[str] = ()) -> Dict[str, int]:
    """Warn once with the counts of fixed/skipped annotations and the first ``problems``;
    return the counts."""
    bad = {k: v for k, v in counts.items() if v}
    if bad:
        first = f"; first problems: {'; '.join(problems)}" if problems else ""
        warnings.warn(f"{name}: annotations fixed or skipped: {bad}{first}", stacklevel=3)
    return bad

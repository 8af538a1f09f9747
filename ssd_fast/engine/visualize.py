"""Pictures of detections (Pillow's ImageDraw)."""
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def draw_detections(image: np.ndarray, boxes, scores, labels, classes: Optional[Sequence[str]] = None,
                    score_threshold: float = 0.3, scale: int = 1) -> Image.Image:
    """``image`` (uint8 [H, W, 3]) with each detection scoring >= ``score_threshold`` drawn as a
    box labelled ``"<class> <score>"``; ``scale`` enlarges small images first (nearest)."""
    im = Image.fromarray(np.asarray(image, np.uint8))
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    for b, s, l in zip(np.asarray(boxes).reshape(-1, 4), scores, labels):
        if s < score_threshold:
            continue
        colour = _PALETTE[int(l) % len(_PALETTE)]
        x1, y1, x2, y2 = (float(v) * scale for v in b)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        name = classes[int(l)] if classes is not None and int(l) < len(classes) else str(int(l))
        text = f"{name} {float(s):.2f}"
        tx, ty = x1, max(0.0, y1 - 11)
        draw.rectangle([tx, ty, tx + 6 * len(text) + 2, ty + 10], fill=colour)
        draw.text((tx + 1, ty - 1), text, fill=(0, 0, 0))
    return im


def grid(images: Sequence[Image.Image], columns: int = 4) -> Image.Image:
    """Tile equally sized images into one."""
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    out = Image.new("RGB", (columns * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        out.paste(im, ((i % columns) * w, (i // columns) * h))
    return out

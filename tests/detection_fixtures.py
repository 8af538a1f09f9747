"""Tiny on-disk datasets the tests write (COCO JSON + PNG images)."""
import json

import numpy as np
from PIL import Image


def _png(path, w=40, h=30):
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def coco_fixture(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in (1, 2):
        _png(images / f"{i}.png")
    ann = {"images": [{"id": 1, "file_name": "1.png", "width": 40, "height": 30},
                      {"id": 2, "file_name": "2.png", "width": 40, "height": 30}],
           "categories": [{"id": 7, "name": "a"}, {"id": 3, "name": "b"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 8], "area": 80, "iscrowd": 0},
                           {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 10, 15, 15], "area": 225, "iscrowd": 0},
                           {"id": 3, "image_id": 2, "category_id": 3, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0},
                           {"id": 4, "image_id": 2, "category_id": 99, "bbox": [5, 5, 2, 2], "area": 4, "iscrowd": 0},
                           {"id": 5, "image_id": 2, "category_id": 7, "bbox": [5, 5, 0, 2], "area": 0, "iscrowd": 0}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    return str(images), str(path)

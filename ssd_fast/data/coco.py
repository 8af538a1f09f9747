"""COCO (``coco:IMAGES_DIR,ANNOTATIONS_JSON``): labels 1..K follow the sorted category ids
(``category_ids[label]`` maps back); ``bbox`` (x, y, w, h) becomes corners; crowd boxes are
kept as ``difficult`` (VOC metrics ignore them; COCO AP uses the annotation file itself).
Bad boxes are clipped or skipped, unknown category ids skipped, with counts
(``bad_annotations``)."""
import json
import os
from collections import Counter, defaultdict

import numpy as np
from PIL import Image

from .annotations import clean_boxes, report


class COCODataset:
    """``dataset[i] -> (image uint8 [H, W, 3] RGB, {"boxes", "labels", "difficult"})``;
    ``coco`` is the ``pycocotools.coco.COCO`` of the annotation file (built on first use)."""

    def __init__(self, images_dir: str, annotations: str):
        if not os.path.isdir(images_dir):
            raise FileNotFoundError(f"coco: images folder {images_dir!r} does not exist")
        if not os.path.isfile(annotations):
            raise FileNotFoundError(f"coco: annotation file {annotations!r} does not exist")
        self.images_dir, self.annotations = images_dir, annotations
        with open(annotations) as f:
            data = json.load(f)
        cats = sorted(data.get("categories", []), key=lambda c: c["id"])
        self.category_ids = [0] + [c["id"] for c in cats]
        self.classes = ("__background__",) + tuple(c.get("name", str(c["id"])) for c in cats)
        label_of = {cid: i for i, cid in enumerate(self.category_ids) if i}
        self.images = sorted(data["images"], key=lambda im: im["id"])
        per_image = defaultdict(list)
        for a in data.get("annotations", []):
            per_image[a["image_id"]].append(a)
        counts = Counter()
        self.targets = []
        for im in self.images:
            boxes, labels, crowd = [], [], []
            for a in per_image[im["id"]]:
                if a.get("category_id") not in label_of:
                    counts["unknown_class"] += 1
                    continue
                x, y, w, h = a["bbox"]
                boxes.append([x, y, x + w, y + h])
                labels.append(label_of[a["category_id"]])
                crowd.append(bool(a.get("iscrowd", 0)))
            boxes, keep = clean_boxes(np.array(boxes, np.float32), im["width"], im["height"], counts)
            self.targets.append({"boxes": boxes, "labels": np.array(labels, np.int64).reshape(-1)[keep],
                                 "difficult": np.array(crowd, bool).reshape(-1)[keep]})
        self.bad_annotations = report(f"coco:{annotations}", counts)
        self._coco = None

    @property
    def coco(self):
        if self._coco is None:
            import contextlib
            import io

            from pycocotools.coco import COCO
            with contextlib.redirect_stdout(io.StringIO()):
                self._coco = COCO(self.annotations)
        return self._coco

    def __len__(self):
        return len(self.images)

    def target(self, index):
        return self.targets[index]

    def image_id(self, index):
        return self.images[index]["id"]

    def __getitem__(self, index):
        path = os.path.join(self.images_dir, self.images[index]["file_name"])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"coco: image {path!r} (image id {self.image_id(index)}) does not exist")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")), self.targets[index]

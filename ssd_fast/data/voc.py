"""PASCAL VOC (``voc:ROOT[,year=2007,split=test]``): ``ROOT/VOC<year>/{ImageSets/Main/<split>.txt,
Annotations/<id>.xml, JPEGImages/<id>.jpg}``, ROOT being the ``VOCdevkit`` folder.

Boxes: VOC's 1-based inclusive pixel corners become ``(xmin - 1, ymin - 1, xmax, ymax)``, so a
box covers exactly its pixels. ``difficult`` is kept. All annotations are parsed once at
construction: boxes outside the image are clipped, degenerate ones and unknown classes are
skipped, with a warning giving the counts (``bad_annotations``).
"""
import os
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
from PIL import Image

from .annotations import clean_boxes, report

VOC_CLASSES = ("__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def _need(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"voc: {path!r} does not exist")
    return path


class VOCDataset:
    """``dataset[i] -> (image uint8 [H, W, 3] RGB, {"boxes", "labels", "difficult"})``."""

    classes = VOC_CLASSES

    def __init__(self, root: str, year: int = 2007, split: str = "test", classes=VOC_CLASSES):
        self.classes = tuple(classes)
        self.dir = _need(os.path.join(os.fspath(root), f"VOC{year}"))
        with open(_need(os.path.join(self.dir, "ImageSets", "Main", f"{split}.txt"))) as f:
            self.ids = [line.split()[0] for line in f if line.strip()]
        index = {c: i for i, c in enumerate(self.classes)}
        counts = Counter()
        self.targets, self.files = [], []
        for img_id in self.ids:
            root_el = ET.parse(_need(os.path.join(self.dir, "Annotations", f"{img_id}.xml"))).getroot()
            size = root_el.find("size")
            w, h = int(size.find("width").text), int(size.find("height").text)
            boxes, labels, difficult = [], [], []
            for obj in root_el.iter("object"):
                name = obj.find("name").text.strip()
                if name not in index:
                    counts["unknown_class"] += 1
                    continue
                bb = obj.find("bndbox")
                x1, y1, x2, y2 = (float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
                boxes.append([x1 - 1, y1 - 1, x2, y2])
                labels.append(index[name])
                d = obj.find("difficult")
                difficult.append(d is not None and d.text.strip() == "1")
            boxes, keep = clean_boxes(np.array(boxes, np.float32), w, h, counts)
            self.targets.append({"boxes": boxes, "labels": np.array(labels, np.int64).reshape(-1)[keep],
                                 "difficult": np.array(difficult, bool).reshape(-1)[keep]})
            self.files.append(os.path.join(self.dir, "JPEGImages", f"{img_id}.jpg"))
        self.bad_annotations = report(f"voc:{root} {year} {split}", counts)

    def __len__(self):
        return len(self.ids)

    def target(self, index):
        return self.targets[index]

    def image_id(self, index):
        return index

    def __getitem__(self, index):
        with Image.open(_need(self.files[index])) as im:
            return np.asarray(im.convert("RGB")), self.targets[index]

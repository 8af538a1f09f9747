"""PASCAL VOC (``voc:ROOT[,year=2007,split=test]``): ``ROOT/VOC<year>/{ImageSets/Main/<split>.txt,
Annotations/<id>.xml, JPEGImages/<id>.jpg}``, ROOT being the ``VOCdevkit`` folder.

Boxes: VOC's 1-based inclusive pixel corners become ``(xmin - 1, ymin - 1, xmax, ymax)``, so a
box covers exactly its pixels. ``difficult`` is kept. All annotations are parsed once at
construction, and every image's header is read for its real size (some 30 us an image with the
files in the page cache, about what parsing its XML costs). Fixed or skipped, with a warning
giving the counts (``bad_annotations``) and the first few files:

- ``bad_file``: an image whose XML or JPEG cannot be read or parsed is left out of the dataset
  (``ids``, ``len``); if that leaves nothing, ``ValueError``;
- ``size_mismatch``: ``<size>`` missing, not a number, or not the image's: the real size is used;
- ``bad_object``: an object without ``<name>`` or with a ``<bndbox>`` corner missing or not a
  number is skipped; ``unknown_class``: one of another class is skipped;
- ``clipped`` / ``degenerate``: boxes outside the image are clipped, empty or non-finite ones
  skipped.
"""
import os
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
from PIL import Image

from .annotations import clean_boxes, count_bad, report
from .dataset import DetectionDataset, Option, register_format
from .images import read_image

VOC_CLASSES = ("__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
_CORNERS = ("xmin", "ymin", "xmax", "ymax")


def _need(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"voc: {path!r} does not exist")
    return path


def _why(e):
    return getattr(e, "strerror", None) or str(e)


def _number(text):
    """``text`` as a float; None where it is missing or not a number."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


@register_format("voc", positional=("ROOT",), help="PASCAL VOC; ROOT is the VOCdevkit folder",
                 options=(Option("year", int, "reads ROOT/VOC<year>"),
                          Option("split", str, "the image list ImageSets/Main/<split>.txt")))
class VOCDataset(DetectionDataset):
    """``dataset[i] -> (image uint8 [H, W, 3] RGB, {"boxes", "labels", "difficult"})``; ``ids[i]``
    is the VOC id of image ``i`` (images left out are not counted)."""

    classes = VOC_CLASSES

    def __init__(self, root: str, year: int = 2007, split: str = "test", classes=VOC_CLASSES):
        self.classes = tuple(classes)
        self.dir = _need(os.path.join(os.fspath(root), f"VOC{year}"))
        self.split_file = _need(os.path.join(self.dir, "ImageSets", "Main", f"{split}.txt"))
        with open(self.split_file) as f:
            listed = [line.split()[0] for line in f if line.strip()]
        index = {c: i for i, c in enumerate(self.classes)}
        counts, problems = Counter(), []
        self.ids, self.targets, self.image_paths = [], [], []
        for img_id in listed:
            xml = os.path.join(self.dir, "Annotations", f"{img_id}.xml")
            jpg = os.path.join(self.dir, "JPEGImages", f"{img_id}.jpg")
            try:
                ann = ET.parse(xml).getroot()
            except (OSError, ET.ParseError) as e:
                count_bad(counts, problems, "bad_file", f"{xml!r} skipped: {_why(e)}")
                continue
            try:
                with Image.open(jpg) as im:
                    w, h = im.size
            except (OSError, Image.DecompressionBombError) as e:
                count_bad(counts, problems, "bad_file", f"{jpg!r} skipped: {_why(e)}")
                continue
            size = ann.findtext("size/width"), ann.findtext("size/height")
            if (_number(size[0]), _number(size[1])) != (w, h):
                count_bad(counts, problems, "size_mismatch",
                          f"{xml!r}: <size> width {size[0]!r} height {size[1]!r}, the image is {w}x{h}; "
                          f"boxes are clipped to the image")
            boxes, labels, difficult = [], [], []
            for obj in ann.iter("object"):
                name = (obj.findtext("name") or "").strip()
                corners = [obj.findtext(f"bndbox/{k}") for k in _CORNERS]
                box = [_number(c) for c in corners]
                if not name or None in box:
                    count_bad(counts, problems, "bad_object", f"{xml!r}: object skipped: <name> {name!r}, "
                                                              f"<bndbox> {dict(zip(_CORNERS, corners))}")
                    continue
                if name not in index:
                    counts["unknown_class"] += 1
                    continue
                boxes.append([box[0] - 1, box[1] - 1, box[2], box[3]])
                labels.append(index[name])
                difficult.append((obj.findtext("difficult") or "").strip() == "1")
            boxes, keep = clean_boxes(np.array(boxes, np.float32), w, h, counts)
            self.targets.append({"boxes": boxes, "labels": np.array(labels, np.int64).reshape(-1)[keep],
                                 "difficult": np.array(difficult, bool).reshape(-1)[keep]})
            self.ids.append(img_id)
            self.image_paths.append(jpg)
        name = f"voc:{root} {year} {split}"
        if listed and not self.ids:
            raise ValueError(f"{name}: none of the {len(listed)} images listed could be read: {problems[0]}")
        self.bad_annotations = report(name, counts, problems)

    def __len__(self):
        return len(self.ids)

    def target(self, index):
        return self.targets[index]

    def __getitem__(self, index):
        return read_image(_need(self.image_paths[index])), self.targets[index]

    @property
    def files(self):
        """The split's image list, the ``Annotations`` and the ``JPEGImages`` folders."""
        return self.split_file, os.path.join(self.dir, "Annotations"), os.path.join(self.dir, "JPEGImages")

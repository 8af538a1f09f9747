"""COCO (``coco:IMAGES_DIR,ANNOTATIONS_JSON``): labels 1..K follow the sorted category ids
(``category_ids[label]`` maps back); ``bbox`` (x, y, w, h) becomes corners; crowd boxes are
kept as ``difficult`` (VOC metrics ignore them; COCO AP uses the annotation file itself).

A file that is not a JSON object with ``images`` and ``categories`` lists (and, if present, an
``annotations`` list) is a ``ValueError`` naming it. Bad entries are fixed or skipped, with a
warning giving the counts (``bad_annotations``) and the first few entries:

- ``bad_image``: an image without an integer ``id``, a ``file_name`` string, and a positive
  ``width`` and ``height`` is left out of the dataset, as is a ``duplicate_image`` (an id seen
  before); if that leaves nothing, ``ValueError``;
- ``bad_category``: a category without an integer ``id``, or with one seen before, is skipped;
- ``bad_annotation``: an annotation that is not an object; ``unknown_image``: one whose
  ``image_id`` is not a kept image; ``unknown_class``: one whose ``category_id`` is no kept
  category; ``bad_box``: one whose ``bbox`` is not 4 numbers. All are skipped;
- ``clipped`` / ``degenerate``: boxes outside the image are clipped, empty or non-finite ones
  skipped.
"""
import json
import math
import os
from collections import Counter, defaultdict

import numpy as np

from .annotations import clean_boxes, count_bad, report
from .dataset import DetectionDataset, register_format
from .images import read_image


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_IMAGE_FIELDS = {"id": _is_int, "file_name": lambda v: isinstance(v, str) and v != "",
                 "width": lambda v: _is_number(v) and 0 < v < math.inf,
                 "height": lambda v: _is_number(v) and 0 < v < math.inf}


def _short(entry):
    return json.dumps(entry)[:120]


def _load(path: str) -> dict:
    """The annotation file's JSON; ``ValueError`` naming the file unless it looks like COCO."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except ValueError as e:  # not JSON, or not UTF-8/16/32 text
        raise ValueError(f"coco: annotation file {path!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"coco: annotation file {path!r} is not COCO: expected a JSON object, "
                         f"got {_short(data)}")
    for key in ("images", "categories", "annotations"):
        if not isinstance(data.get(key, [] if key == "annotations" else None), list):
            got = _short(data[key]) if key in data else f"no {key!r} among the keys {sorted(data)}"
            raise ValueError(f"coco: annotation file {path!r} is not COCO: {key!r} must be a list, got {got}")
    return data


def _parse(data: dict, counts: Counter, problems: list):
    """``(categories, images, annotations by image id)``: the well-formed entries of ``data``,
    categories and images sorted by id; the others counted."""
    images = {}
    for im in data["images"]:
        bad = [k for k, ok in _IMAGE_FIELDS.items() if not (isinstance(im, dict) and ok(im.get(k)))]
        if bad:
            count_bad(counts, problems, "bad_image", f"image {_short(im)} skipped: bad {', '.join(bad)}")
        elif im["id"] in images:
            count_bad(counts, problems, "duplicate_image", f"image {_short(im)} skipped: id seen before")
        else:
            images[im["id"]] = im
    cats = {}
    for c in data["categories"]:
        if not isinstance(c, dict) or not _is_int(c.get("id")) or c["id"] in cats:
            count_bad(counts, problems, "bad_category", f"category {_short(c)} skipped: no integer 'id' "
                                                        f"or one seen before")
        else:
            cats[c["id"]] = c
    per_image = defaultdict(list)
    for a in data.get("annotations", []):
        if not isinstance(a, dict):
            count_bad(counts, problems, "bad_annotation", f"annotation {_short(a)} skipped: not an object")
        elif not _is_int(a.get("image_id")) or a["image_id"] not in images:
            count_bad(counts, problems, "unknown_image", f"annotation {_short(a)} skipped: no such image")
        elif not _is_int(a.get("category_id")) or a["category_id"] not in cats:
            count_bad(counts, problems, "unknown_class", f"annotation {_short(a)} skipped: no such category")
        elif not (isinstance(a.get("bbox"), list) and len(a["bbox"]) == 4 and all(map(_is_number, a["bbox"]))):
            count_bad(counts, problems, "bad_box", f"annotation {_short(a)} skipped: 'bbox' is not 4 numbers")
        else:
            per_image[a["image_id"]].append(a)
    return [cats[k] for k in sorted(cats)], [images[k] for k in sorted(images)], per_image


@register_format("coco", positional=("IMAGES_DIR", "ANNOTATIONS_JSON"),
                 help="COCO detection: the images folder and its instances JSON")
class COCODataset(DetectionDataset):
    """``dataset[i] -> (image uint8 [H, W, 3] RGB, {"boxes", "labels", "difficult"})``;
    ``image_id(i)`` is the COCO id of image ``i`` (images left out are not counted); ``coco`` is
    the ``pycocotools.coco.COCO`` of the kept images and annotations (built on first use)."""

    def __init__(self, images_dir: str, annotations: str):
        if not os.path.isdir(images_dir):
            raise FileNotFoundError(f"coco: images folder {images_dir!r} does not exist")
        if not os.path.isfile(annotations):
            raise FileNotFoundError(f"coco: annotation file {annotations!r} does not exist")
        self.images_dir, self.annotations = images_dir, annotations
        data = _load(annotations)
        counts, problems = Counter(), []
        cats, self.images, per_image = _parse(data, counts, problems)
        if data["images"] and not self.images:
            raise ValueError(f"coco: annotation file {annotations!r}: none of its {len(data['images'])} "
                             f"images is usable: {problems[0]}")
        self.category_ids = [0] + [c["id"] for c in cats]
        self.classes = ("__background__",) + tuple(str(c.get("name", c["id"])) for c in cats)
        label_of = {cid: i for i, cid in enumerate(self.category_ids) if i}
        self.targets = []
        for im in self.images:
            anns = per_image[im["id"]]
            boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            boxes, keep = clean_boxes(boxes, im["width"], im["height"], counts)
            self.targets.append({"boxes": boxes,
                                 "labels": np.array([label_of[a["category_id"]] for a in anns], np.int64)[keep],
                                 "difficult": np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)[keep]})
        self.bad_annotations = report(f"coco:{annotations}", counts, problems)
        self._coco = None

    @property
    def coco(self):
        """The ground truth COCO AP is scored against: the file re-read, less the images and
        annotations skipped as malformed or unknown (boxes clipped or found empty stay as the
        file has them); annotations are renumbered and get ``area`` (w * h) and ``iscrowd`` (0)
        where they lack them. pycocotools scores a clean file as the file itself."""
        if self._coco is None:
            import contextlib
            import io

            from pycocotools.coco import COCO
            cats, images, per_image = _parse(_load(self.annotations), Counter(), [])
            anns = [a for im in images for a in per_image[im["id"]]]
            anns = [dict(a, id=k + 1, iscrowd=int(bool(a.get("iscrowd", 0))),
                         area=a["area"] if _is_number(a.get("area")) else a["bbox"][2] * a["bbox"][3])
                    for k, a in enumerate(anns)]
            self._coco = COCO()
            self._coco.dataset = {"images": images, "annotations": anns, "categories": cats}
            with contextlib.redirect_stdout(io.StringIO()):
                self._coco.createIndex()
        return self._coco

    def __len__(self):
        return len(self.images)

    def target(self, index):
        return self.targets[index]

    def image_id(self, index):
        return self.images[index]["id"]

    @property
    def files(self):
        """The annotation file and the images folder."""
        return self.annotations, self.images_dir

    def __getitem__(self, index):
        path = os.path.join(self.images_dir, self.images[index]["file_name"])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"coco: image {path!r} (image id {self.image_id(index)}) does not exist")
        return read_image(path), self.targets[index]

"""The data loaders' bad-input table: one malformed VOC XML or COCO JSON per row, and what the
loader must make of it: a ValueError naming the file, or the counts (``bad_annotations``), the
images kept and their boxes. Never a ParseError, KeyError, AttributeError or TypeError."""
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from ssd_fast.data.coco import COCODataset
from ssd_fast.data.voc import VOC_CLASSES, VOCDataset
from ssd_fast.engine.metrics import coco_ap, coco_results

from detection_fixtures import coco_fixture
from test_datasets import _voc

CORNERS = ("xmin", "ymin", "xmax", "ymax")
MISSING = object()  # a row's file or a JSON field that is not there
FOLDER = object()  # a row's file that is a folder


def _obj(name="dog", box=(1, 2, 10, 20), difficult="<difficult>0</difficult>"):
    """A VOC ``<object>``; ``None`` leaves out the name, the box, or one corner."""
    name = "" if name is None else f"<name>{name}</name>"
    box = "" if box is None else "<bndbox>" + "".join(
        f"<{k}>{v}</{k}>" for k, v in zip(CORNERS, box) if v is not None) + "</bndbox>"
    return f"<object>{name}{difficult}{box}</object>"


def _xml(*objects, size=(40, 30)):
    size = "" if size is None else f"<size><width>{size[0]}</width><height>{size[1]}</height></size>"
    return f"<annotation><filename>000002.jpg</filename>{size}{''.join(objects)}</annotation>"


def voc_row(id, xml, counts, boxes, image=(40, 30)):
    """``xml`` of image 000002 (str, bytes, MISSING or FOLDER), its JPEG (a (w, h), bytes or
    MISSING); the expected ``bad_annotations`` and its boxes (None: the image is skipped)."""
    return pytest.param(xml, image, counts, boxes, id=f"voc-{id}")


DOG = [[0, 1, 10, 20]]
VOC_ROWS = [
    voc_row("broken-xml", "<annotation><size>", {"bad_file": 1}, None),
    voc_row("empty-file", "", {"bad_file": 1}, None),
    voc_row("not-xml", "hello", {"bad_file": 1}, None),
    voc_row("invalid-utf8", b"<annotation><name>\xff\xfe</name></annotation>", {"bad_file": 1}, None),
    voc_row("xml-missing", MISSING, {"bad_file": 1}, None),
    voc_row("xml-is-a-folder", FOLDER, {"bad_file": 1}, None),
    voc_row("jpeg-missing", _xml(_obj()), {"bad_file": 1}, None, image=MISSING),
    voc_row("jpeg-not-an-image", _xml(_obj()), {"bad_file": 1}, None, image=b"not a jpeg"),
    voc_row("no-size", _xml(_obj(), size=None), {"size_mismatch": 1}, DOG),
    voc_row("size-0", _xml(_obj(), size=(0, 0)), {"size_mismatch": 1}, DOG),
    voc_row("size-not-a-number", _xml(_obj(), size=("forty", 30)), {"size_mismatch": 1}, DOG),
    voc_row("size-empty", _xml(_obj(), size=("", "")), {"size_mismatch": 1}, DOG),
    voc_row("size-smaller-than-image", _xml(_obj(box=(1, 2, 30, 25)), size=(20, 15)), {"size_mismatch": 1},
            [[0, 1, 30, 25]]),
    voc_row("size-larger-than-image", _xml(_obj(box=(1, 2, 100, 25)), size=(400, 300)),
            {"size_mismatch": 1, "clipped": 1}, [[0, 1, 40, 25]]),
    voc_row("size-as-floats", _xml(_obj(), size=("40.0", "30.0")), {}, DOG),
    voc_row("no-name", _xml(_obj(name=None)), {"bad_object": 1}, []),
    voc_row("empty-name", _xml(_obj(name="")), {"bad_object": 1}, []),
    voc_row("no-bndbox", _xml(_obj(box=None)), {"bad_object": 1}, []),
    voc_row("no-xmax", _xml(_obj(box=(1, 2, None, 20))), {"bad_object": 1}, []),
    voc_row("corner-not-a-number", _xml(_obj(box=(1, "two", 10, 20))), {"bad_object": 1}, []),
    voc_row("corner-empty", _xml(_obj(box=("", 2, 10, 20))), {"bad_object": 1}, []),
    voc_row("corner-nan", _xml(_obj(box=(1, 2, "nan", 20))), {"degenerate": 1}, []),
    voc_row("corner-inf", _xml(_obj(box=(1, 2, "inf", 20))), {"degenerate": 1}, []),
    voc_row("negative-corners", _xml(_obj(box=(-5, -5, 10, 10))), {"clipped": 1}, [[0, 0, 10, 10]]),
    voc_row("fractional-corners", _xml(_obj(box=(1.5, 2, 10, 20.5))), {}, [[0.5, 1, 10, 20.5]]),
    voc_row("xmax-before-xmin", _xml(_obj(box=(10, 2, 5, 20))), {"degenerate": 1}, []),
    voc_row("box-outside-image", _xml(_obj(box=(100, 100, 200, 200))), {"degenerate": 1}, []),
    voc_row("unknown-class", _xml(_obj(name="unicorn")), {"unknown_class": 1}, []),
    voc_row("name-with-spaces", _xml(_obj(name=" dog ")), {}, DOG),
    voc_row("empty-difficult", _xml(_obj(difficult="<difficult/>")), {}, DOG),
    voc_row("no-objects", _xml(), {}, []),
    voc_row("other-root-element", "<foo/>", {"size_mismatch": 1}, []),
    voc_row("good-and-bad-objects", _xml(_obj(box=None), _obj(), _obj(name="cat", box=(1, 1, "x", 5))),
            {"bad_object": 2}, DOG),
]


def _voc_with(root, xml, image):
    """The fixture of test_datasets (image 000001, a dog) plus image 000002 as the row says."""
    _voc(root, [("dog", 0, (1, 2, 10, 20))])
    d = root / "VOC2007"
    with open(d / "ImageSets" / "Main" / "test.txt", "a") as f:
        f.write("000002\n")
    path = d / "Annotations" / "000002.xml"
    if xml is FOLDER:
        path.mkdir()
    elif xml is not MISSING:
        path.write_bytes(xml if isinstance(xml, bytes) else xml.encode())
    jpg = d / "JPEGImages" / "000002.jpg"
    if isinstance(image, bytes):
        jpg.write_bytes(image)
    elif image is not MISSING:
        Image.fromarray(np.full((image[1], image[0], 3), 128, np.uint8)).save(jpg)


def _loaded(build):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build()
    return ds, [str(w.message) for w in caught]


@pytest.mark.parametrize("xml, image, counts, boxes", VOC_ROWS)
def test_bad_voc(tmp_path, xml, image, counts, boxes):
    _voc_with(tmp_path, xml, image)
    ds, warned = _loaded(lambda: VOCDataset(str(tmp_path)))
    assert ds.bad_annotations == counts
    assert len(warned) == bool(counts) and all(k in warned[0] for k in counts)
    assert ds.ids == ["000001"] + ([] if boxes is None else ["000002"])
    assert len(ds) == len(ds.ids) and [ds.image_id(i) for i in range(len(ds))] == list(range(len(ds)))
    np.testing.assert_array_equal(ds.target(0)["boxes"], DOG)
    if boxes is not None:
        img, t = ds[1]
        assert img.shape == (image[1], image[0], 3)
        np.testing.assert_array_equal(t["boxes"], np.array(boxes, np.float32).reshape(-1, 4))
        assert t["labels"].tolist() == [VOC_CLASSES.index("dog")] * len(boxes)
        assert t["difficult"].tolist() == [False] * len(boxes)


def test_voc_warning_names_the_files_and_what_is_wrong(tmp_path):
    _voc_with(tmp_path, "<annotation><size>", (40, 30))
    with pytest.warns(UserWarning, match=r"bad_file.*000002\.xml' skipped: no element found"):
        VOCDataset(str(tmp_path))


def test_voc_with_no_readable_image_is_an_error(tmp_path):
    _voc_with(tmp_path, "", (40, 30))
    (tmp_path / "VOC2007" / "Annotations" / "000001.xml").write_text("<annotation>")
    with pytest.raises(ValueError, match=r"none of the 2 images listed could be read: .*000001\.xml' skipped"):
        VOCDataset(str(tmp_path))


IMAGES = [{"id": 1, "file_name": "1.png", "width": 40, "height": 30},
          {"id": 2, "file_name": "2.png", "width": 40, "height": 30}]
CATEGORIES = [{"id": 1, "name": "a"}]


def _ann(**fields):
    """A good annotation of image 1 (a 10x8 box), with ``fields`` replaced; MISSING removes one."""
    a = {"id": 9, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 8], "area": 80, "iscrowd": 0, **fields}
    return {k: v for k, v in a.items() if v is not MISSING}


def _coco(images=IMAGES, annotations=(_ann(),), categories=CATEGORIES):
    return {"images": list(images), "annotations": list(annotations), "categories": list(categories)}


def _image(**fields):
    im = {"id": 1, "file_name": "1.png", "width": 40, "height": 30, **fields}
    return {k: v for k, v in im.items() if v is not MISSING}


def coco_row(id, content, expected):
    """``content`` of the annotation file (JSON of a Python value, or str/bytes as they are);
    ``expected``: a regex of the ValueError, or ``(bad_annotations, image ids, boxes per image)``."""
    return pytest.param(content, expected, id=f"coco-{id}")


def kept(counts, ids=(1, 2), boxes=(0, 0)):
    """The expected ``bad_annotations``, image ids, and number of boxes of each image."""
    return counts, list(ids), list(boxes)


GOOD = kept({}, boxes=[1, 0])
COCO_ROWS = [
    coco_row("json-list", [], r"is not COCO: expected a JSON object, got \[\]"),
    coco_row("json-null", None, r"is not COCO: expected a JSON object, got null"),
    coco_row("json-number", 3, r"is not COCO: expected a JSON object, got 3"),
    coco_row("invalid-json", '{"images": [', r"is not valid JSON: Expecting value"),
    coco_row("empty-file", "", r"is not valid JSON"),
    coco_row("invalid-utf8", b'{"images": ["\xff"]}', r"is not valid JSON: 'utf-8' codec can't decode"),
    coco_row("no-images", {"categories": []},
             r"'images' must be a list, got no 'images' among the keys \['categories'\]"),
    coco_row("images-null", {"images": None, "categories": []}, r"'images' must be a list, got null"),
    coco_row("images-an-object", {"images": {"1": IMAGES[0]}, "categories": []}, r"'images' must be a list"),
    coco_row("no-categories", {"images": IMAGES}, r"'categories' must be a list, got no 'categories'"),
    coco_row("annotations-an-object", {**_coco(), "annotations": {}}, r"'annotations' must be a list, got \{\}"),
    coco_row("no-usable-image", _coco(images=[_image(width=MISSING), _image(id="2")]),
             r"none of its 2 images is usable: image .* skipped: bad width"),
    coco_row("utf8-bom", b"\xef\xbb\xbf" + json.dumps(_coco()).encode(), GOOD),
    coco_row("non-ascii-name", _coco(categories=[{"id": 1, "name": "\u00e9l\u00e9phant"}]), GOOD),
    coco_row("no-annotations", {"images": IMAGES, "categories": CATEGORIES}, kept({})),
    coco_row("images-unsorted", _coco(images=IMAGES[::-1]), GOOD),
    coco_row("float-size", _coco(images=[_image(width=40.0, height=30.0), IMAGES[1]]), GOOD),
    coco_row("no-area-no-iscrowd", _coco(annotations=[_ann(area=MISSING, iscrowd=MISSING)]), GOOD),
    coco_row("annotation-without-id", _coco(annotations=[_ann(id=MISSING), _ann(id=MISSING, bbox=[5, 5, 5, 5])]),
             kept({}, [1, 2], [2, 0])),
    coco_row("crowd", _coco(annotations=[_ann(iscrowd=1)]), GOOD),
    coco_row("bbox-null", _coco(annotations=[_ann(bbox=None), _ann(), _ann(bbox=None)]),
             kept({"bad_box": 2}, boxes=[1, 0])),
    coco_row("bbox-missing", _coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1}]),
             kept({"bad_box": 1})),
    coco_row("bbox-3-numbers", _coco(annotations=[_ann(bbox=[1, 2, 3])]), kept({"bad_box": 1})),
    coco_row("bbox-5-numbers", _coco(annotations=[_ann(bbox=[1, 2, 3, 4, 5])]), kept({"bad_box": 1})),
    coco_row("bbox-a-string", _coco(annotations=[_ann(bbox="1,2,10,8")]), kept({"bad_box": 1})),
    coco_row("bbox-string-number", _coco(annotations=[_ann(bbox=["1", 2, 10, 8])]), kept({"bad_box": 1})),
    coco_row("bbox-null-number", _coco(annotations=[_ann(bbox=[1, None, 10, 8])]), kept({"bad_box": 1})),
    coco_row("bbox-bool", _coco(annotations=[_ann(bbox=[1, 2, True, 8])]), kept({"bad_box": 1})),
    coco_row("bbox-nan", _coco(annotations=[_ann(bbox=[1, 2, float("nan"), 8])]), kept({"degenerate": 1})),
    coco_row("bbox-inf", _coco(annotations=[_ann(bbox=[1, 2, float("inf"), 8])]), kept({"degenerate": 1})),
    coco_row("bbox-negative-width", _coco(annotations=[_ann(bbox=[10, 2, -5, 8])]), kept({"degenerate": 1})),
    coco_row("bbox-zero-width", _coco(annotations=[_ann(bbox=[10, 2, 0, 8])]), kept({"degenerate": 1})),
    coco_row("bbox-past-the-image", _coco(annotations=[_ann(bbox=[30, 20, 50, 50])]),
             kept({"clipped": 1}, boxes=[1, 0])),
    coco_row("annotation-null", _coco(annotations=[None, _ann()]), kept({"bad_annotation": 1}, boxes=[1, 0])),
    coco_row("annotation-a-list", _coco(annotations=[[1, 2, 10, 8]]), kept({"bad_annotation": 1})),
    coco_row("annotation-unknown-image-id", _coco(annotations=[_ann(image_id=99)]), kept({"unknown_image": 1})),
    coco_row("annotation-without-image-id", _coco(annotations=[_ann(image_id=MISSING)]), kept({"unknown_image": 1})),
    coco_row("annotation-image-id-a-string", _coco(annotations=[_ann(image_id="1")]), kept({"unknown_image": 1})),
    coco_row("annotation-image-id-a-list", _coco(annotations=[_ann(image_id=[1])]), kept({"unknown_image": 1})),
    coco_row("annotation-unknown-category-id", _coco(annotations=[_ann(category_id=5)]), kept({"unknown_class": 1})),
    coco_row("annotation-without-category-id", _coco(annotations=[_ann(category_id=MISSING)]),
             kept({"unknown_class": 1})),
    coco_row("annotation-category-id-a-list", _coco(annotations=[_ann(category_id=[1])]), kept({"unknown_class": 1})),
    coco_row("image-without-width", _coco(images=[_image(width=MISSING), IMAGES[1]]),
             kept({"bad_image": 1, "unknown_image": 1}, [2], [0])),
    coco_row("image-width-0", _coco(images=[_image(width=0), IMAGES[1]]),
             kept({"bad_image": 1, "unknown_image": 1}, [2], [0])),
    coco_row("image-height-a-string", _coco(images=[_image(height="30"), IMAGES[1]]),
             kept({"bad_image": 1, "unknown_image": 1}, [2], [0])),
    coco_row("image-height-nan", _coco(images=[IMAGES[1], _image(height=float("nan"))]),
             kept({"bad_image": 1, "unknown_image": 1}, [2], [0])),
    coco_row("image-without-id", _coco(images=[IMAGES[0], _image(id=MISSING, file_name="2.png")]),
             kept({"bad_image": 1}, [1], [1])),
    coco_row("image-id-a-string", _coco(images=[IMAGES[0], _image(id="2", file_name="2.png")]),
             kept({"bad_image": 1}, [1], [1])),
    coco_row("image-without-file-name", _coco(images=[IMAGES[0], _image(id=2, file_name=MISSING)]),
             kept({"bad_image": 1}, [1], [1])),
    coco_row("image-null", _coco(images=[None, IMAGES[1]]), kept({"bad_image": 1, "unknown_image": 1}, [2], [0])),
    coco_row("duplicate-image-id", _coco(images=[IMAGES[0], _image(file_name="2.png")]),
             kept({"duplicate_image": 1}, [1], [1])),
    coco_row("category-null", _coco(categories=[None, *CATEGORIES]), kept({"bad_category": 1}, boxes=[1, 0])),
    coco_row("category-without-id", _coco(categories=[{"name": "b"}, *CATEGORIES]),
             kept({"bad_category": 1}, boxes=[1, 0])),
    coco_row("category-id-a-string", _coco(categories=[{"id": "1", "name": "a"}]),
             kept({"bad_category": 1, "unknown_class": 1})),
    coco_row("duplicate-category-id", _coco(categories=[*CATEGORIES, {"id": 1, "name": "b"}]),
             kept({"bad_category": 1}, boxes=[1, 0])),
]


@pytest.mark.parametrize("content, expected", COCO_ROWS)
def test_bad_coco(tmp_path, content, expected):
    images, ann = coco_fixture(tmp_path)
    with open(ann, "wb") as f:
        f.write(content if isinstance(content, bytes) else
                content.encode() if isinstance(content, str) else json.dumps(content).encode())
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=r"coco: annotation file '.*ann\.json'.*" + expected):
            COCODataset(images, ann)
        return
    counts, ids, boxes = expected
    ds, warned = _loaded(lambda: COCODataset(images, ann))
    assert ds.bad_annotations == counts
    assert len(warned) == bool(counts) and all(k in warned[0] for k in counts)
    assert [ds.image_id(i) for i in range(len(ds))] == ids and len(ds) == len(ids)
    assert [len(ds[i][1]["boxes"]) for i in range(len(ds))] == boxes
    # COCO AP is scored on the kept images, and pycocotools takes what is left of the file.
    assert sorted(ds.coco.getImgIds()) == ids
    dets = [(ds.target(i)["boxes"], np.ones(len(ds.target(i)["boxes"])), ds.target(i)["labels"])
            for i in range(len(ds))]
    ap = coco_ap(ds.coco, coco_results(dets, ids, ds.category_ids))
    assert all(-1 <= v <= 1 for v in ap.values())


def test_coco_warning_names_the_entry_and_what_is_wrong(tmp_path):
    images, ann = coco_fixture(tmp_path)
    with open(ann, "w") as f:
        json.dump(_coco(images=[_image(width=0), IMAGES[1]]), f)
    with pytest.warns(UserWarning, match=r"bad_image.*image \{\"id\": 1, \"file_name\": \"1\.png\", \"width\": 0, "
                                         r"\"height\": 30\} skipped: bad width"):
        COCODataset(images, ann)

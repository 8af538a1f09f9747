"""Synthetic data, dataset specs, the collate, VOC and COCO loaders on fixtures written here."""
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ssd_fast.data import (Augmented, IterationBatchSampler, TestTransform, TrainTransform, build_dataset,
                           collate, normalize_image, parse_spec)
from ssd_fast.data.coco import COCODataset
from ssd_fast.data.voc import VOCDataset

from detection_fixtures import coco_fixture


def test_synthetic_is_deterministic_and_split():
    a = build_dataset("synthetic:seed=3,n=5,size=64")
    b = build_dataset("synthetic:seed=3,n=5,size=64")
    t = build_dataset("synthetic:seed=3,n=5,size=64,split=test")
    for i in range(5):
        (ia, ta), (ib, tb) = a[i], b[i]
        assert ia.shape == (64, 64, 3) and ia.dtype == np.uint8
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ta["boxes"], tb["boxes"])
        assert len(ta["labels"]) >= 1 and ta["labels"].min() >= 1 and ta["labels"].max() <= 5
        assert (ta["boxes"][:, 2:] > ta["boxes"][:, :2]).all()
        assert (ta["boxes"] >= 0).all() and (ta["boxes"] <= 64).all()
    assert not np.array_equal(a[0][0], t[0][0])
    cached = build_dataset("synthetic:seed=3,n=5,size=64").cache()
    np.testing.assert_array_equal(cached[2][0], a[2][0])


@pytest.mark.parametrize("spec, match", [("nope", "unknown kind"), ("synthetic:seed=x", "seed must be an integer"),
                                         ("synthetic:colour=1", "unknown option"), ("voc", "expected voc:ROOT"),
                                         ("coco:a", "expected coco:IMAGES_DIR,ANNOTATIONS_JSON")])
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_spec(spec)


def test_parse_spec():
    assert parse_spec("voc:/x/VOCdevkit,year=2012,split=val") == ("voc", ["/x/VOCdevkit"], {"year": 2012, "split": "val"})


def test_collate_pads():
    ds = Augmented(build_dataset("synthetic:n=4,size=64"), TestTransform(32))
    images, t = collate([ds[i] for i in range(4)])
    G = max(len(ds[i][1]["labels"]) for i in range(4))
    assert images.shape == (4, 3, 32, 32) and t["boxes"].shape == (4, G, 4)
    for i in range(4):
        g = len(ds[i][1]["labels"])
        assert (t["labels"][i, g:] == -1).all() and (t["labels"][i, :g] >= 1).all()
    assert t["orig_size"].tolist() == [[64, 64]] * 4


@pytest.mark.parametrize("transform", [TestTransform, lambda s, normalize: TrainTransform(s, normalize=normalize)],
                         ids=["test", "train"])
def test_uint8_batches_normalize_to_the_float_path(transform):
    """normalize=False + normalize_image on the batch == the per-image float path, bit for bit;
    the collate stacks HWC images as a channels-last batch."""
    src = build_dataset("synthetic:n=4,size=64")
    floats = collate([Augmented(src, transform(48, normalize=True), seed=5)[i] for i in range(4)])[0]
    pixels = collate([Augmented(src, transform(48, normalize=False), seed=5)[i] for i in range(4)])[0]
    assert pixels.dtype == torch.uint8 and pixels.shape == (4, 3, 48, 48)
    assert pixels.is_contiguous(memory_format=torch.channels_last)
    assert floats.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(normalize_image(pixels), floats)
    x, t = Augmented(src, transform(48, normalize=True), seed=5)[0]
    chw = collate([(x.contiguous(), t)])[0]
    assert chw.is_contiguous() and torch.equal(chw[0], floats[0])  # CHW images: a plain NCHW batch
    with pytest.raises(ValueError, match=r"images must be \[\.\.\., 3, H, W\], got \(4, 48\)"):
        normalize_image(pixels[0, 0, :4])


def test_batch_sampler_resumes_and_shards():
    full = list(IterationBatchSampler(10, 2, 12, seed=1))
    assert list(IterationBatchSampler(10, 2, 12, start=7, seed=1)) == full[7:]
    r0 = list(IterationBatchSampler(10, 2, 4, rank=0, world_size=2))
    r1 = list(IterationBatchSampler(10, 2, 4, rank=1, world_size=2))
    epoch0 = [i for b in r0[:2] + r1[:2] for i, _ in b]
    assert len(set(epoch0)) == 8
    with pytest.raises(ValueError, match="larger than the dataset"):
        IterationBatchSampler(3, 2, 1, world_size=2)


def _voc(root, objects):
    d = root / "VOC2007"
    (d / "ImageSets" / "Main").mkdir(parents=True)
    (d / "Annotations").mkdir()
    (d / "JPEGImages").mkdir()
    (d / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    objs = "".join(f"<object><name>{n}</name><difficult>{d_}</difficult><bndbox><xmin>{b[0]}</xmin>"
                   f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                   for n, d_, b in objects)
    (d / "Annotations" / "000001.xml").write_text(
        f"<annotation><size><width>40</width><height>30</height><depth>3</depth></size>{objs}</annotation>")
    Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(d / "JPEGImages" / "000001.jpg")


def test_voc_loader(tmp_path):
    _voc(tmp_path, [("dog", 0, (1, 2, 10, 20)), ("cat", 1, (5, 5, 30, 25)), ("unicorn", 0, (1, 1, 5, 5)),
                    ("car", 0, (10, 10, 8, 20)), ("bus", 0, (30, 20, 50, 40))])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = build_dataset(f"voc:{tmp_path},year=2007,split=test")
    assert ds.bad_annotations == {"unknown_class": 1, "degenerate": 1, "clipped": 1}
    assert any("unknown_class" in str(x.message) for x in w)
    img, t = ds[0]
    assert img.shape == (30, 40, 3)
    np.testing.assert_array_equal(t["boxes"], [[0, 1, 10, 20], [4, 4, 30, 25], [29, 19, 40, 30]])
    assert [ds.classes[i] for i in t["labels"]] == ["dog", "cat", "bus"]
    assert t["difficult"].tolist() == [False, True, False]


def test_voc_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOC2007"):
        VOCDataset(str(tmp_path))
    _voc(tmp_path, [("dog", 0, (1, 2, 10, 20))])
    ds = VOCDataset(str(tmp_path))
    (tmp_path / "VOC2007" / "JPEGImages" / "000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000001.jpg"):
        ds[0]
    with pytest.raises(ValueError, match=r"none of the 1 images listed could be read: .*000001\.jpg' skipped: "
                                         r"No such file"):
        VOCDataset(str(tmp_path))


def test_coco_loader(tmp_path):
    images, ann = coco_fixture(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset(f"coco:{images},{ann}")
    assert ds.classes == ("__background__", "b", "a") and ds.category_ids == [0, 3, 7]
    assert ds.bad_annotations == {"unknown_class": 1, "degenerate": 1}
    img, t = ds[0]
    assert img.shape == (30, 40, 3)
    np.testing.assert_array_equal(t["boxes"], [[1, 2, 11, 10], [20, 10, 35, 25]])
    assert t["labels"].tolist() == [2, 1]
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        COCODataset(images, str(tmp_path / "nothere.json"))


@pytest.mark.parametrize("kind", ["voc", "coco"])
def test_datasets_read_16_bit_and_grey_images_as_their_rgb_copy(tmp_path, kind):
    # PIL's convert("RGB") clips a 16-bit grey image to white; the datasets scale it to 8 bits
    # (ssd_fast.data.images.to_rgb), so it reads as its 8-bit copy
    grey8 = np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint8)
    if kind == "voc":
        _voc(tmp_path, [("dog", 0, (1, 2, 10, 20))])
        path = tmp_path / "VOC2007" / "JPEGImages" / "000001.jpg"  # read by content, not by name
        ds = VOCDataset(str(tmp_path))
    else:
        images, ann = coco_fixture(tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = COCODataset(images, ann)
        path = os.path.join(images, ds.images[0]["file_name"])
    expected = np.repeat(grey8[:, :, None], 3, axis=2)
    for image in (Image.fromarray(grey8.astype(np.uint16) * 257), Image.fromarray(grey8)):
        image.save(path, format="PNG")
        got, _ = ds[0]
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)


def test_datasets_list_their_inputs(tmp_path):
    """``files``: what a dataset reads; ``input_at``: whether an output path lands on it."""
    synthetic = build_dataset("synthetic:n=2,size=64")
    assert synthetic.files == () and synthetic.input_at(tmp_path / "x.png") is None
    _voc(tmp_path, [("dog", 0, (1, 2, 10, 20))])
    voc = VOCDataset(str(tmp_path))
    d = os.path.join(str(tmp_path), "VOC2007")
    split, annotations, jpegs = voc.files
    assert voc.files == (os.path.join(d, "ImageSets", "Main", "test.txt"), os.path.join(d, "Annotations"),
                         os.path.join(d, "JPEGImages"))
    assert voc.input_at(os.path.join(jpegs, "000001.jpg")) == jpegs
    assert voc.input_at(os.path.join(jpegs, "new.png")) == jpegs  # a folder stands for all in it
    assert voc.input_at(split) == split and voc.input_at(os.path.join(annotations, "a", "b.xml")) == annotations
    assert voc.input_at(jpegs + "2") is None and voc.input_at(tmp_path / "out.json") is None
    (tmp_path / "coco").mkdir()
    images, ann = coco_fixture(tmp_path / "coco")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coco = build_dataset(f"coco:{images},{ann}")
    assert coco.files == (ann, images)
    os.symlink(ann, tmp_path / "link.json")
    assert coco.input_at(tmp_path / "link.json") == ann  # links resolved
    assert coco.input_at(os.path.join(images, "det.png")) == images and coco.input_at(tmp_path / "m.json") is None

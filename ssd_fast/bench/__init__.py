"""Benchmark cases shared by ``ssd-fast bench`` and the pytest-benchmark files in benchmarks/.

A case builds its inputs on a device and lists the implementations to compare: ``ssd_fast``
(the kernels), ``torchvision`` (where it has the op) and ``reference`` (pure PyTorch). Before
anything is timed, every implementation's output is checked against ssd_fast's.

The package: the op cases and the ``ssd-fast bench`` table here, the end-to-end inference cases
in :mod:`ssd_fast.bench.inference`, the one timer of both in :mod:`ssd_fast.bench.timer`.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from .. import ops
from ..ops import reference
from .timer import median_seconds

IMPLS = ("ssd_fast", "torchvision", "reference")


def random_boxes(*shape, device="cpu", dtype=torch.float32, generator=None, scale=1.0):
    """Well-formed random boxes in [0, scale]: centres uniform, sides in [0.02, 0.5] * scale."""
    c = torch.rand(*shape, 2, generator=generator) * scale
    wh = (torch.rand(*shape, 2, generator=generator) * 0.48 + 0.02) * scale
    return torch.cat([c - wh / 2, c + wh / 2], -1).to(device=device, dtype=dtype)


def _torchvision():
    try:
        import torchvision
        return torchvision
    except ImportError:
        return None


def clustered_boxes(n, clusters, device="cpu", dtype=torch.float32, generator=None):
    """Boxes jittered around `clusters` objects in [0, 1] (what a detector emits before NMS):
    heavy overlaps, so NMS suppresses most of them."""
    centre = torch.rand(clusters, 2, generator=generator) * 0.9 + 0.05
    size = torch.rand(clusters, 2, generator=generator) * 0.2 + 0.05
    which = torch.randint(0, clusters, (n,), generator=generator)
    c = centre[which] + torch.randn(n, 2, generator=generator) * 0.01
    s = size[which] * (1 + 0.1 * torch.randn(n, 2, generator=generator))
    return torch.cat([c - s / 2, c + s / 2], -1).to(device=device, dtype=dtype)


@dataclass
class Case:
    """One benchmark case: ``make(device)`` builds the inputs, ``impls`` maps an implementation
    (one of :data:`IMPLS`) to a callable of them, ``check(out, ssd_fast_out)`` compares outputs."""
    op: str
    size: str
    make: Callable[[str], tuple]
    impls: Dict[str, Callable] = field(default_factory=dict)
    check: Callable = lambda out, ref: torch.testing.assert_close(out, ref)
    # Replaces the comparison of every implementation with ssd_fast, where they compute
    # different things (ssd_fast's default bipartite matching vs torchvision's argmax).
    verify: Optional[Callable] = None
    devices: tuple = ("cpu", "cuda")  # where it runs (CPU timings of torchvision can take minutes)

    @property
    def name(self):
        return f"{self.op} {self.size}"


def _box_iou_cases():
    tv = _torchvision()
    sizes = [("8732x64", (8732,), (64,)), ("5000x5000", (5000,), (5000,)),
             ("32x8732x16", (32, 8732), (32, 16))]
    out = []
    for size, s1, s2 in sizes:
        def make(device, s1=s1, s2=s2):
            g = torch.Generator().manual_seed(0)
            return random_boxes(*s1, device=device, generator=g), random_boxes(*s2, device=device, generator=g)
        impls = {"ssd_fast": ops.box_iou, "reference": reference.box_iou}
        if tv is not None:
            # torchvision's box_iou is 2-D only; batched inputs go through torch.vmap-free loop.
            impls["torchvision"] = (tv.ops.box_iou if len(s1) == 1 else
                                    lambda a, b: torch.stack([tv.ops.box_iou(x, y) for x, y in zip(a, b)]))
        out.append(Case("box_iou", size, make, impls))
    return out


def _coder_cases():
    def make(device):
        g = torch.Generator().manual_seed(0)
        gt = random_boxes(32, 8732, device=device, generator=g)
        priors = random_boxes(8732, device=device, generator=g)
        return gt, priors
    def make_offsets(device):
        gt, priors = make(device)
        return reference.encode_boxes(gt, priors), priors
    tol = lambda out, ref: torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    return [Case("encode_boxes", "32x8732", make,
                 {"ssd_fast": ops.encode_boxes, "reference": reference.encode_boxes}, tol),
            Case("decode_boxes", "32x8732", make_offsets,
                 {"ssd_fast": ops.decode_boxes, "reference": reference.decode_boxes}, tol)]


def _targets_inputs(device, G, B=32):
    """An SSD300 batch: the 8732 VOC default boxes, G random GTs per image, some padding rows."""
    from ..models import get_prior_spec

    g = torch.Generator().manual_seed(G)
    priors = get_prior_spec("voc", 300).generate()
    gt = random_boxes(B, G, generator=g)
    labels = torch.randint(1, 21, (B, G), generator=g)
    labels[1::2, G - max(1, G // 4):] = -1  # padding in every other image
    return gt.to(device), labels.to(device), priors.to(device)


def _torchvision_targets(tv):
    """torchvision's SSD path, one image at a time: box_iou + SSDMatcher + BoxCoder.encode."""
    from torchvision.models.detection import _utils as det_utils

    matcher = det_utils.SSDMatcher(0.5)
    coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))

    def run(gt_boxes, gt_labels, priors):
        locs, labels = [], []
        for boxes, lab in zip(gt_boxes, gt_labels):
            keep = lab >= 0
            boxes, lab = boxes[keep], lab[keep]
            matched = matcher(tv.ops.box_iou(boxes, priors))
            fg = matched >= 0
            loc = coder.encode_single(boxes[matched.clamp(min=0)], priors)
            locs.append(torch.where(fg[:, None], loc, torch.zeros_like(loc)))
            labels.append(torch.where(fg, lab[matched.clamp(min=0)], torch.zeros_like(lab[:1])))
        return torch.stack(locs), torch.stack(labels)
    return run


def _verify_targets_argmax(tv_run):
    def verify(inputs):
        loc, labels, _ = ops.ssd_targets(*inputs, mode="argmax")
        ref = reference.ssd_targets(*inputs, mode="argmax")
        torch.testing.assert_close(labels, ref[1], rtol=0, atol=0)
        torch.testing.assert_close(loc, ref[0], rtol=1e-5, atol=1e-4)
        if tv_run is not None:
            tv_loc, tv_labels = tv_run(*inputs)
            torch.testing.assert_close(labels, tv_labels, rtol=0, atol=0)
            torch.testing.assert_close(loc, tv_loc, rtol=1e-4, atol=1e-3)
        ours = ops.ssd_targets(*inputs)  # the timed default, bipartite: against its reference
        ref = reference.ssd_targets(*inputs)
        torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=0)
    return verify


def _targets_cases():
    tv = _torchvision()
    tv_run = _torchvision_targets(tv) if tv is not None else None
    out = []
    for G in (4, 20, 100):
        impls = {"ssd_fast": ops.ssd_targets}
        if tv_run is not None:
            impls["torchvision"] = tv_run
        if G <= 20:  # the reference's greedy loop is a Python loop over GTs: slow at G=100
            impls["reference"] = reference.ssd_targets
        out.append(Case("ssd_targets", f"32x8732 G={G}", lambda d, G=G: _targets_inputs(d, G),
                        impls, verify=_verify_targets_argmax(tv_run)))
    return out


def sort_twice_mining(conf_loss, labels, neg_pos_ratio=3):
    """torchvision's SSD hard negative selection (its ``SSD.compute_loss``): two full sorts per
    row. The baseline of the mining benchmark, and the oracle the mining tests compare with."""
    fg = labels > 0
    num_neg = neg_pos_ratio * fg.sum(1, keepdim=True)
    neg_loss = conf_loss.clone()
    neg_loss[fg] = -float("inf")
    _, idx = neg_loss.sort(1, descending=True)
    return fg | (idx.sort(1)[1] < num_neg)


def _mining_cases():
    def make(device):
        g = torch.Generator().manual_seed(0)
        loss = torch.rand(32, 8732, generator=g) * 5
        labels = torch.where(torch.rand(32, 8732, generator=g) < 0.01,
                             torch.randint(1, 21, (32, 8732), generator=g), 0)
        return loss.to(device), labels.to(device)
    impls = {"ssd_fast": ops.hard_negative_mining, "torchvision": sort_twice_mining,
             "reference": reference.hard_negative_mining}
    return [Case("hard_negative_mining", "32x8732", make, impls,
                 check=lambda out, ref: torch.testing.assert_close(out, ref, rtol=0, atol=0))]


def _multibox_loss_cases():
    def make(device):  # an SSD300 VOC batch of 8 given its targets, ~1% positive priors
        g = torch.Generator().manual_seed(0)
        B, P, C = 8, 8732, 21
        labels = torch.where(torch.rand(B, P, generator=g) < 0.01,
                             torch.randint(1, C, (B, P), generator=g), 0)
        return (torch.randn(B, P, 4, generator=g).to(device),
                (torch.randn(B, P, C, generator=g) * 2).to(device),
                torch.randn(B, P, 4, generator=g).to(device), labels.to(device))

    def check(out, ref):
        torch.testing.assert_close(out[:2], ref[:2], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[2], ref[2], rtol=0, atol=0)
    return [Case("multibox_loss", "8x8732x21", make,
                 {"ssd_fast": ops.multibox_loss, "reference": reference.multibox_loss}, check)]


def _same_keep(out, ref):
    torch.testing.assert_close(out.cpu(), ref.cpu(), rtol=0, atol=0)


def _nms_cases():
    tv = _torchvision()
    out = []
    for n in (1000, 5000, 8732, 20000, 100_000):
        for kind in ("random", "clustered"):
            def make(device, n=n, kind=kind):
                g = torch.Generator().manual_seed(0)
                boxes = (random_boxes(n, generator=g) if kind == "random"
                         else clustered_boxes(n, max(1, n // 100), generator=g))
                return boxes.to(device), torch.rand(n, generator=g).to(device), 0.5
            impls = {"ssd_fast": ops.nms}
            if tv is not None:
                impls["torchvision"] = tv.ops.nms
            if n <= 1000:  # the reference is a Python loop over the kept boxes
                impls["reference"] = reference.nms
            # torchvision's CPU loop takes ~3 s at 100k random boxes: CUDA only there
            devices = ("cuda",) if (n, kind) == (100_000, "random") else ("cpu", "cuda")
            out.append(Case("nms", f"{n // 1000}k-{kind}" if n % 1000 == 0 else f"{n}-{kind}",
                            make, impls, _same_keep, devices=devices))
    return out


def _same_batched_keep(out, ref):
    """torchvision's batched_nms sorts its result unstably: equal scores may be swapped."""
    out, ref = out.cpu(), ref.cpu()
    torch.testing.assert_close(out.sort().values, ref.sort().values, rtol=0, atol=0)


def _batched_nms_cases():
    tv = _torchvision()
    out = []
    for n in (8732, 50_000, 200_000):  # around 100 objects, 80 classes
        def make(device, n=n):
            g = torch.Generator().manual_seed(0)
            boxes = clustered_boxes(n, 100, generator=g)
            return (boxes.to(device), torch.rand(n, generator=g).to(device),
                    torch.randint(0, 80, (n,), generator=g).to(device), 0.5)
        impls = {"ssd_fast": ops.batched_nms}
        if tv is not None:
            impls["torchvision"] = tv.ops.batched_nms
        out.append(Case("batched_nms", f"{n}x80cls" if n < 10000 else f"{n // 1000}kx80cls",
                        make, impls, _same_batched_keep))
    return out


_TV_SSD = None


def _tv_ssd():
    """torchvision's SSD300 (no weights): only its postprocess_detections is used."""
    global _TV_SSD
    if _TV_SSD is None:
        _TV_SSD = _torchvision().models.detection.ssd300_vgg16(weights=None,
                                                               weights_backbone=None).eval()
    return _TV_SSD


def _detections_match(out, ref, size=300.0):
    """ours (padded tensors, normalised boxes) against torchvision's list of dicts (pixels):
    same counts and labels, boxes and scores up to rounding."""
    boxes, scores, labels, num = (t.cpu() for t in out)
    for i, det in enumerate(ref):
        k = len(det["scores"])
        assert int(num[i]) == k
        torch.testing.assert_close(labels[i, :k], det["labels"].cpu(), rtol=0, atol=0)
        torch.testing.assert_close(scores[i, :k], det["scores"].cpu(), rtol=1e-5, atol=0)
        torch.testing.assert_close(boxes[i, :k] * size, det["boxes"].cpu(), rtol=0, atol=1e-3)


def _ssd_postprocess_cases():
    tv = _torchvision()
    out = []
    for batch, classes in ((1, 21), (8, 21), (32, 21), (1, 81), (8, 81), (32, 81)):
        def make(device, batch=batch, classes=classes):
            g = torch.Generator().manual_seed(0)
            loc = torch.randn(batch, 8732, 4, generator=g) * 0.5
            logits = torch.randn(batch, 8732, classes, generator=g)
            priors = random_boxes(8732, generator=g)
            return (loc.to(device), logits.to(device), priors.to(device),
                    [(priors * 300).to(device)] * batch)

        def ours(loc, logits, priors, anchors):
            return ops.ssd_postprocess(loc, logits, priors, clip=True)

        impls = {"ssd_fast": ours}
        if tv is not None:
            def tv_postprocess(loc, logits, priors, anchors):
                with torch.no_grad():
                    return _tv_ssd().postprocess_detections(
                        {"bbox_regression": loc, "cls_logits": logits}, anchors,
                        [(300, 300)] * len(anchors))
            impls["torchvision"] = tv_postprocess
        # (no reference: its per-image, per-class Python loop takes about a second per image)
        # torchvision takes ~0.3 s per image and 21 classes on 2 CPU threads, 4x that with 81
        devices = ("cpu", "cuda") if batch <= 8 and classes == 21 else ("cuda",)
        out.append(Case("ssd_postprocess", f"{batch}x8732x{classes}", make, impls,
                        _detections_match, devices=devices))
    return out


def all_cases() -> List[Case]:
    """Every op case of ``ssd-fast bench`` and benchmarks/, in the table's order."""
    return (_box_iou_cases() + _coder_cases() + _targets_cases() + _mining_cases()
            + _multibox_loss_cases() + _nms_cases() + _batched_nms_cases() + _ssd_postprocess_cases())


def check_case(case: Case, inputs) -> None:
    """Assert every implementation agrees with ssd_fast on these inputs."""
    if case.verify is not None:
        case.verify(inputs)
        return
    ours = case.impls["ssd_fast"](*inputs)
    for name, fn in case.impls.items():
        if name != "ssd_fast":
            case.check(ours, fn(*inputs))


def run(devices, op_filter: Optional[List[str]] = None, min_seconds=0.3):
    """Yield one result row per (case, device): times in seconds (None: no such implementation)."""
    for case in all_cases():
        if op_filter and case.op not in op_filter:
            continue
        for device in devices:
            if device not in case.devices:
                continue
            inputs = case.make(device)
            check_case(case, inputs)
            row = {"op": case.op, "size": case.size, "device": device}
            for impl in IMPLS:
                fn = case.impls.get(impl)
                row[impl] = median_seconds(fn, *inputs, min_seconds=min_seconds) if fn else None
            yield row


def format_row(row) -> str:
    """One row of :func:`run` as a line of the ``ssd-fast bench`` table under :data:`HEADER`."""
    def ms(t):
        return f"{t * 1e3:10.3f}" if t is not None else f"{'-':>10}"
    base = row["torchvision"] or row["reference"]
    speedup = f"{base / row['ssd_fast']:8.1f}x" if base else f"{'-':>9}"
    return (f"{row['op']:<20} {row['size']:<14} {row['device']:<6} {ms(row['ssd_fast'])} "
            f"{ms(row['torchvision'])} {ms(row['reference'])} {speedup}")


HEADER = (f"{'op':<20} {'size':<14} {'device':<6} {'ssd_fast':>10} {'torchvision':>10} "
          f"{'reference':>10} {'speed-up':>9}\n{'':<42}{'(ms)':>10} {'(ms)':>10} {'(ms)':>10} "
          f"{'(vs tv, else ref)':>9}")

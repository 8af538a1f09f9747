"""MultiBoxLoss: equal to a plain composition of the reference ops and to torchvision's
compute_loss (argmax matching); gradients; no positives; autocast; errors."""
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.ssd import SSD as TorchvisionSSD
from torchvision.ops import box_iou

from ssd_fast.models import MultiBoxLoss, PriorSpec
from ssd_fast.ops import reference as ref

C = 5
SPEC = PriorSpec(64, [8, 4, 2, 1], None, [8, 20, 36, 52], [20, 36, 52, 64], [[2], [2, 3], [2, 3], [2]])


@pytest.fixture
def priors():
    return SPEC.generate()


def random_batch(gen, P, B=3, G=4, dtype=torch.float32):
    """Outputs and padded GT: image 0 has G boxes, image 1 two, image 2 none (all padding)."""
    xy = torch.rand(B, G, 2, generator=gen) * 0.7
    wh = torch.rand(B, G, 2, generator=gen) * 0.5 + 0.1
    gt_boxes = torch.cat([xy, (xy + wh).clamp(max=1)], -1)
    gt_labels = torch.randint(1, C, (B, G), generator=gen)
    gt_labels[1, 2:] = -1
    gt_labels[2] = -1
    loc = torch.randn(B, P, 4, generator=gen, dtype=dtype)
    conf = torch.randn(B, P, C, generator=gen, dtype=dtype) * 2
    return loc, conf, gt_boxes, gt_labels


def plain_multibox(loc, conf, gt_boxes, gt_labels, priors, mode, neg_pos_ratio=3.0):
    """SPEC §3 with the reference ops, written the obvious way."""
    loc_t, labels, _ = ref.ssd_targets(gt_boxes, gt_labels, priors, 0.5, ref.DEFAULT_VARIANCES, mode)
    pos = labels > 0
    n = max(int(pos.sum()), 1)
    background_ce = -F.log_softmax(conf, -1)[..., 0]
    mask = ref.hard_negative_mining(background_ce, labels, neg_pos_ratio)
    ce = F.cross_entropy(conf.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    return F.smooth_l1_loss(loc[pos], loc_t[pos].to(loc.dtype), reduction="sum") / n, ce[mask].sum() / n


@pytest.mark.parametrize("mode", ["bipartite", "argmax"])
@pytest.mark.parametrize("ratio", [3.0, 0.5])
def test_equals_plain_composition(gen, priors, mode, ratio):
    loc, conf, gt_boxes, gt_labels = random_batch(gen, priors.shape[0], dtype=torch.float64)
    loss = MultiBoxLoss(priors, C, neg_pos_ratio=ratio, mode=mode)
    got = loss(loc, conf, gt_boxes, gt_labels)
    expected = plain_multibox(loc, conf, gt_boxes, gt_labels, priors, mode, ratio)
    assert got[0].dtype == torch.float64
    # the targets are float32 (the priors' dtype): kernels and references round them differently
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert expected[0] > 0 and expected[1] > 0


def test_equals_torchvision_compute_loss(gen, priors):
    """argmax matching + 3:1 mining is torchvision's SSD loss (its compute_loss, on the matches
    its SSDMatcher makes)."""
    loc, conf, gt_boxes, gt_labels = random_batch(gen, priors.shape[0])
    ours = MultiBoxLoss(priors, C, mode="argmax")(loc, conf, gt_boxes, gt_labels)
    targets, matches = [], []
    for boxes, labels in zip(gt_boxes, gt_labels):
        keep = labels >= 0
        targets.append({"boxes": boxes[keep], "labels": labels[keep]})
        matches.append(tv_utils.SSDMatcher(0.5)(box_iou(boxes[keep], priors)) if keep.any()
                       else torch.full((priors.shape[0],), -1))
    tv_self = SimpleNamespace(box_coder=tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3.0)
    tv = TorchvisionSSD.compute_loss(tv_self, targets, {"bbox_regression": loc, "cls_logits": conf},
                                     [priors] * 3, matches)
    torch.testing.assert_close(ours, (tv["bbox_regression"], tv["classification"]), rtol=1e-5, atol=1e-6)


def test_gradients(gen, priors):
    loc, conf, gt_boxes, gt_labels = random_batch(gen, priors.shape[0], dtype=torch.float64)
    loss = MultiBoxLoss(priors, C)
    loc.requires_grad_(True)
    conf.requires_grad_(True)
    loc_loss, conf_loss = loss(loc, conf, gt_boxes, gt_labels)
    (loc_loss + conf_loss).backward()
    _, labels, _ = ref.ssd_targets(gt_boxes, gt_labels, priors)
    pos = labels > 0
    mask = ref.hard_negative_mining(-F.log_softmax(conf.detach(), -1)[..., 0], labels)
    assert (loc.grad[~pos] == 0).all() and (loc.grad[pos].abs().sum(-1) > 0).all()
    assert (conf.grad[~mask] == 0).all() and (conf.grad[mask].abs().sum(-1) > 0).all()
    assert mask.sum() > pos.sum()  # negatives were mined
    # the loss is smooth where the targets and the mining are constant: check the derivatives
    # numerically on a few positive, mined and ignored priors of image 0
    rows = torch.cat([pos[0].nonzero()[:3, 0], (mask[0] & ~pos[0]).nonzero()[:3, 0], (~mask[0]).nonzero()[:2, 0]])

    def f(loc_rows, conf_rows):
        l, c = loc.detach().clone(), conf.detach().clone()
        l[0, rows], c[0, rows] = loc_rows, conf_rows
        return sum(loss(l, c, gt_boxes, gt_labels))
    inputs = (loc.detach()[0, rows].clone().requires_grad_(), conf.detach()[0, rows].clone().requires_grad_())
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


def test_no_positives_is_finite_and_zero(gen, priors):
    loc, conf, gt_boxes, gt_labels = random_batch(gen, priors.shape[0])
    gt_labels[:] = -1
    loc.requires_grad_(True)
    conf.requires_grad_(True)
    loc_loss, conf_loss = MultiBoxLoss(priors, C)(loc, conf, gt_boxes, gt_labels)
    (loc_loss + conf_loss).backward()
    assert loc_loss.item() == 0 and conf_loss.item() == 0
    assert (loc.grad == 0).all() and (conf.grad == 0).all()


def test_no_gt_boxes_at_all(gen, priors):
    loc, conf, _, _ = random_batch(gen, priors.shape[0])
    loc_loss, conf_loss = MultiBoxLoss(priors, C)(loc, conf, torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.int64))
    assert loc_loss.item() == 0 and conf_loss.item() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_outputs(gen, priors, dtype):
    """Half-precision head outputs (autocast) give the float32 loss of the same values, even with
    logits whose exp or square overflows the half type."""
    loc, conf, gt_boxes, gt_labels = random_batch(gen, priors.shape[0])
    conf[0, :10] *= 5000  # |logit| ~ 1e4: exp overflows everything, x^2 overflows float16
    loc, conf = loc.to(dtype), conf.to(dtype)
    loss = MultiBoxLoss(priors, C)
    got = loss(loc.requires_grad_(), conf.requires_grad_(), gt_boxes, gt_labels)
    assert got[0].dtype == got[1].dtype == torch.float32 and all(torch.isfinite(g) for g in got)
    torch.testing.assert_close(got, loss(loc.detach().float(), conf.detach().float(), gt_boxes, gt_labels))
    sum(got).backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(conf.grad).all()
    assert loc.grad.dtype == conf.grad.dtype == dtype


def test_priors_are_a_buffer(gen, priors):
    """Not in the state dict (the model's spec makes them); converted by ``.to()``."""
    loss = MultiBoxLoss(priors, C)
    assert "priors" not in loss.state_dict()
    loc, conf, gt_boxes, gt_labels = random_batch(gen, priors.shape[0], dtype=torch.float64)
    torch.testing.assert_close(loss.double()(loc, conf, gt_boxes, gt_labels), loss(loc, conf, gt_boxes, gt_labels))


def test_bad_label_on_every_device(device, gen, priors):
    """gt_labels >= num_classes: the same ValueError on every device (on a GPU after one host
    synchronisation, which check_labels=False skips: then conf_loss is NaN)."""
    P = priors.shape[0]
    loc, conf, gt_boxes, gt_labels = (t.to(device) for t in random_batch(gen, P))
    gt_labels[0, 1] = C + 2
    loss = MultiBoxLoss(priors, C).to(device)
    with pytest.raises(ValueError, match=f"MultiBoxLoss: gt_labels must be < num_classes={C}, got {C + 2}"):
        loss(loc, conf, gt_boxes, gt_labels)
    if device.type != "cpu":
        loc_loss, conf_loss = MultiBoxLoss(priors, C, check_labels=False).to(device)(
            loc, conf, gt_boxes, gt_labels)
        assert torch.isnan(conf_loss.cpu()) and torch.isfinite(loc_loss.cpu())


def test_bool_labels_are_refused(gen, priors):
    loc, conf, gt_boxes, gt_labels = random_batch(gen, priors.shape[0])
    with pytest.raises(ValueError, match=r"gt_labels must be integer \[B, G\] = \(3, 4\), got torch.bool"):
        MultiBoxLoss(priors, C)(loc, conf, gt_boxes, gt_labels > 1)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile_fullgraph(gen, priors, backend):
    """The label check reads a value back: outside the traced graph, so fullgraph compiles; the
    compiled loss equals the eager one, and a bad label still raises (from the op, on the CPU)."""
    torch._dynamo.reset()
    loss = MultiBoxLoss(priors, C)
    compiled = torch.compile(loss, backend=backend, fullgraph=True)
    batch = random_batch(gen, priors.shape[0])
    for got, expected in zip(compiled(*batch), loss(*batch)):
        assert torch.equal(got, expected)
    loc, conf, gt_boxes, gt_labels = batch
    gt_labels[0, 0] = C
    with pytest.raises(Exception, match=f"must be < C = {C}"):
        compiled(loc, conf, gt_boxes, gt_labels)


def test_errors(gen, priors):
    P = priors.shape[0]
    loc, conf, gt_boxes, gt_labels = random_batch(gen, P)
    loss = MultiBoxLoss(priors, C)
    with pytest.raises(ValueError, match=rf"conf_logits must be \[B, {P}, num_classes=5\], got \(3, {P}, 4\)"):
        loss(loc, conf[..., :4], gt_boxes, gt_labels)
    with pytest.raises(ValueError, match=rf"loc must be \[B, {P}, 4\], got \(3, {P - 1}, 4\)"):
        loss(loc[:, 1:], conf, gt_boxes, gt_labels)
    with pytest.raises(ValueError, match=r"gt_boxes must be \[B=3, G, 4\], got \(2, 4, 4\)"):
        loss(loc, conf, gt_boxes[:2], gt_labels[:2])
    with pytest.raises(ValueError, match=r"conf_logits must have loc's batch size 3, got \(2, "):
        loss(loc, conf[:2], gt_boxes, gt_labels)
    with pytest.raises(ValueError, match=r"gt_labels must be integer \[B, G\] = \(3, 4\), got torch.float32"):
        loss(loc, conf, gt_boxes, gt_labels.float())
    with pytest.raises(ValueError, match="gt_labels must be < num_classes=5, got 5"):
        loss(loc, conf, gt_boxes, gt_labels.clamp(max=4) + (gt_labels == 4).long())
    with pytest.raises(ValueError, match="mode must be one of .* got 'best'"):
        MultiBoxLoss(priors, C, mode="best")
    with pytest.raises(ValueError, match=r"priors must be a \[P, 4\] tensor, got \(4, 3\)"):
        MultiBoxLoss(torch.zeros(4, 3), C)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2, got 1"):
        MultiBoxLoss(priors, 1)
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\], got 1.5"):
        MultiBoxLoss(priors, C, iou_threshold=1.5)


# Every argument the constructor stores: (argument, bad value, what the message says after "got ").
BAD_CONSTRUCTOR_ARGUMENTS = {
    "variances-zeros": ("variances", (0, 0, 0, 0), "(0, 0, 0, 0)"),
    "variances-negative": ("variances", (0.1, -0.1, 0.2, 0.2), "(0.1, -0.1, 0.2, 0.2)"),
    "variances-three": ("variances", (0.1, 0.1, 0.2), "(0.1, 0.1, 0.2)"),
    "variances-inf": ("variances", (0.1, 0.1, float("inf"), 0.2), "(0.1, 0.1, inf, 0.2)"),
    "variances-nan": ("variances", [0.1, 0.1, 0.2, float("nan")], "[0.1, 0.1, 0.2, nan]"),
    "variances-str": ("variances", "0.1", "'0.1'"),
    "variances-none": ("variances", None, "None"),
    "variances-str_element": ("variances", (0.1, "0.1", 0.2, 0.2), "(0.1, '0.1', 0.2, 0.2)"),
    "neg_pos_ratio-negative": ("neg_pos_ratio", -1.0, "-1.0"),
    "neg_pos_ratio-inf": ("neg_pos_ratio", float("inf"), "inf"),
    "neg_pos_ratio-nan": ("neg_pos_ratio", float("nan"), "nan"),
    "neg_pos_ratio-str": ("neg_pos_ratio", "3", "'3'"),
    "neg_pos_ratio-bool": ("neg_pos_ratio", True, "True"),
    "neg_pos_ratio-none": ("neg_pos_ratio", None, "None"),
    "iou_threshold-above_1": ("iou_threshold", 1.5, "1.5"),
    "iou_threshold-nan": ("iou_threshold", float("nan"), "nan"),
    "iou_threshold-str": ("iou_threshold", "0.5", "'0.5'"),
    "iou_threshold-none": ("iou_threshold", None, "None"),
    "mode-unknown": ("mode", "best", "'best'"),
    "mode-none": ("mode", None, "None"),
    "mode-list": ("mode", ["argmax"], "['argmax']"),
    "check_labels-str": ("check_labels", "no", "'no'"),
    "check_labels-int": ("check_labels", 0, "0"),
    "check_labels-none": ("check_labels", None, "None"),
    "num_classes-one": ("num_classes", 1, "1"),
    "num_classes-float": ("num_classes", 5.0, "5.0"),
    "num_classes-bool": ("num_classes", True, "True"),
    "num_classes-str": ("num_classes", "5", "'5'"),
    "priors-list": ("priors", [[0.0, 0.0, 1.0, 1.0]], "list"),
    "priors-shape": ("priors", torch.zeros(4, 3), "(4, 3)"),
    "priors-integer": ("priors", torch.zeros(4, 4, dtype=torch.int64), "torch.int64"),
    "priors-nan": ("priors", torch.full((4, 4), float("nan")), "non-finite"),
}


@pytest.mark.parametrize("case", BAD_CONSTRUCTOR_ARGUMENTS)
def test_bad_constructor_argument_raises(priors, case):
    # at construction, not at the first forward: every argument it stores is checked
    name, value, shown = BAD_CONSTRUCTOR_ARGUMENTS[case]
    kwargs = dict(priors=priors, num_classes=C, neg_pos_ratio=3.0, iou_threshold=0.5,
                  variances=(0.1, 0.1, 0.2, 0.2), mode="bipartite", check_labels=True)
    kwargs[name] = value
    with pytest.raises(ValueError, match=rf"^MultiBoxLoss: {name} must .*got.* {re.escape(shown)}"):
        MultiBoxLoss(**kwargs)


def test_good_constructor_arguments_of_other_types(gen, priors):
    loc, conf, gt_boxes, gt_labels = random_batch(gen, priors.shape[0])
    expected = MultiBoxLoss(priors, C)(loc, conf, gt_boxes, gt_labels)
    for kwargs in (dict(variances=[0.1, 0.1, 0.2, 0.2]), dict(neg_pos_ratio=3), dict(iou_threshold=np.float64(0.5)),
                   dict(variances=torch.tensor([0.1, 0.1, 0.2, 0.2], dtype=torch.float64))):
        assert MultiBoxLoss(priors, np.int64(C), **kwargs)(loc, conf, gt_boxes, gt_labels) == expected

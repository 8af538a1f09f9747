"""One SSD300 training step, split in two: the network's forward + backward, and the targets +
loss (ssd_fast's MultiBoxLoss vs torchvision's SSD matching + ``compute_loss`` on the same head
outputs). CPU: batch 8; CUDA: batch 32 (the network with float16 autocast).

Loss cases (``targets+loss``; outputs checked equal before timing):

- ``argmax``: ssd_fast ``MultiBoxLoss(mode="argmax")`` (its targets included) vs torchvision's
  ``SSDMatcher`` per image + ``SSD.compute_loss`` (the same loss: checked equal) vs the plain
  composition of the reference ops.
- ``argmax, tv compute_loss only``: the same ssd_fast call vs ``compute_loss`` alone, with
  torchvision's matches computed beforehand (the narrowest comparison: ours does more work).
- ``bipartite``: the default (Caffe) matching; torchvision has none.

``fwd+bwd`` cases: the same calls with ``requires_grad`` head outputs, plus the
gradients of ``loc_loss + conf_loss`` w.r.t. ``loc`` and ``conf`` (checked equal before timing).

The network rows time forward + backward with a fixed output gradient: rounds are few, since
one SSD300 step at batch 8 takes seconds on a small CPU.
"""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.ssd import SSD as TorchvisionSSD
from torchvision.ops import box_iou

from conftest import DEVICES
from ssd_fast.bench import Case
from ssd_fast.models import PRESETS, MultiBoxLoss, ssd300_vgg16
from ssd_fast.ops import reference as ref

NUM_CLASSES, MAX_GT = 21, 8


def batch_size(device):
    return 32 if torch.device(device).type == "cuda" else 8


def make_inputs(device, priors):
    """Head outputs and padded GT of one batch (1..MAX_GT boxes per image), plus torchvision's
    views of the same GT (a list of dicts, and its matches)."""
    g = torch.Generator().manual_seed(0)
    B, P = batch_size(device), priors.shape[0]
    xy = torch.rand(B, MAX_GT, 2, generator=g) * 0.7
    wh = torch.rand(B, MAX_GT, 2, generator=g) * 0.4 + 0.05
    gt_boxes = torch.cat([xy, (xy + wh).clamp(max=1.0)], -1)
    gt_labels = torch.randint(1, NUM_CLASSES, (B, MAX_GT), generator=g)
    counts = torch.randint(1, MAX_GT + 1, (B,), generator=g)
    gt_labels[torch.arange(MAX_GT) >= counts[:, None]] = -1
    loc = torch.randn(B, P, 4, generator=g)
    conf = torch.randn(B, P, NUM_CLASSES, generator=g) * 2
    loc, conf, gt_boxes, gt_labels, priors = (t.to(device) for t in (loc, conf, gt_boxes, gt_labels, priors))
    # torchvision's loss is invariant to the unit of the boxes: it gets the same normalized ones,
    # so that IoU ties break identically and the losses agree to rounding
    targets = [{"boxes": b[l >= 0], "labels": l[l >= 0]} for b, l in zip(gt_boxes, gt_labels)]
    return loc, conf, gt_boxes, gt_labels, targets, torchvision_matches(targets, priors)


def torchvision_matches(targets, priors):
    matcher = tv_utils.SSDMatcher(0.5)
    return [matcher(box_iou(t["boxes"], priors)) for t in targets]


def loss_cases():
    priors = PRESETS["voc", 300].generate()
    tv_self = SimpleNamespace(box_coder=tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3.0)

    def torchvision_loss(loc, conf, gt_boxes, gt_labels, targets, matches, match=True):
        if match:
            matches = torchvision_matches(targets, priors.to(loc.device))
        out = TorchvisionSSD.compute_loss(tv_self, targets, {"bbox_regression": loc, "cls_logits": conf},
                                          [priors.to(loc.device)] * loc.shape[0], matches)
        return out["bbox_regression"], out["classification"]

    def reference_loss(loc, conf, gt_boxes, gt_labels, *_, mode):
        """SPEC §3 with the pure-PyTorch reference ops, written the obvious way."""
        p = priors.to(loc.device)
        loc_t, labels, _ = ref.ssd_targets(gt_boxes, gt_labels, p, 0.5, ref.DEFAULT_VARIANCES, mode)
        pos = labels > 0
        n = pos.sum().clamp(min=1)
        mask = ref.hard_negative_mining(-F.log_softmax(conf, -1)[..., 0], labels)
        ce = F.cross_entropy(conf.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
        return F.smooth_l1_loss(loc[pos], loc_t[pos], reduction="sum") / n, ce[mask].sum() / n

    def ours(mode):
        losses = {}

        def run(loc, conf, gt_boxes, gt_labels, *_):
            if loc.device not in losses:
                losses[loc.device] = MultiBoxLoss(priors, NUM_CLASSES, mode=mode).to(loc.device)
            return losses[loc.device](loc, conf, gt_boxes, gt_labels)
        return run

    def fwd_bwd(loss_fn):
        """The losses and the gradients of their sum w.r.t. the head outputs."""
        def run(loc, conf, *rest):
            loc, conf = loc.detach().requires_grad_(), conf.detach().requires_grad_()
            loc_loss, conf_loss = loss_fn(loc, conf, *rest)
            grad_loc, grad_conf = torch.autograd.grad(loc_loss + conf_loss, (loc, conf))
            return loc_loss.detach(), conf_loss.detach(), grad_loc, grad_conf
        return run

    close = lambda out, ref_out: torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)  # noqa: E731

    def close_grads(out, ref_out):  # gradients are ~1/num_pos: compared at a finer atol
        close(out[:2], ref_out[:2])
        torch.testing.assert_close(out[2:], ref_out[2:], rtol=1e-4, atol=1e-7)

    size = lambda s: f"ssd300 {s}"  # noqa: E731
    make = lambda device: make_inputs(device, priors)  # noqa: E731
    return [
        Case("targets+loss", size("argmax"), make,
             {"ssd_fast": ours("argmax"), "torchvision": torchvision_loss,
              "reference": lambda *a: reference_loss(*a, mode="argmax")}, close),
        Case("targets+loss", size("argmax, tv compute_loss only"), make,
             {"ssd_fast": ours("argmax"), "torchvision": lambda *a: torchvision_loss(*a, match=False)}, close),
        Case("targets+loss", size("bipartite"), make,
             {"ssd_fast": ours("bipartite"), "reference": lambda *a: reference_loss(*a, mode="bipartite")}, close),
        Case("targets+loss", size("argmax fwd+bwd"), make,
             {"ssd_fast": fwd_bwd(ours("argmax")), "torchvision": fwd_bwd(torchvision_loss),
              "reference": fwd_bwd(lambda *a: reference_loss(*a, mode="argmax"))}, close_grads),
        Case("targets+loss", size("argmax fwd+bwd, tv compute_loss only"), make,
             {"ssd_fast": fwd_bwd(ours("argmax")),
              "torchvision": fwd_bwd(lambda *a: torchvision_loss(*a, match=False))}, close_grads),
    ]


LOSS_CASES = loss_cases()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,impl", [pytest.param(c, impl, id=f"{c.size}-{impl}")
                                       for c in LOSS_CASES for impl in c.impls])
def test_targets_and_loss(run_case, case, impl, device):
    run_case(case, impl, device)


@pytest.mark.parametrize("device", DEVICES)
def test_network_forward_backward(benchmark, device):
    B = batch_size(device)
    amp = torch.device(device).type == "cuda"
    torch.manual_seed(0)
    model = ssd300_vgg16(NUM_CLASSES).to(device).train()
    images = torch.randn(B, 3, 300, 300, device=device)
    grads = [torch.randn(B, 8732, 4, device=device), torch.randn(B, 8732, NUM_CLASSES, device=device)]

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=torch.float16, enabled=amp):
            loc, conf = model(images)
        torch.autograd.backward([loc, conf], [grads[0].to(loc.dtype), grads[1].to(conf.dtype)])

    benchmark.group = f"network fwd+bwd {device}"
    benchmark.extra_info.update(op="network fwd+bwd", size=f"ssd300 bs{B}" + (" amp fp16" if amp else ""),
                                device=device, impl="ssd_fast", threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=3 if amp else 2, warmup_rounds=1)

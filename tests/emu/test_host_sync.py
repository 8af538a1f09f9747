"""No host synchronisation where the docstrings promise none (SPEC §1): on the emulated device,
where every device-to-host copy and .item() is counted, the public ops run on device inputs and
the count must not move; nms and batched_nms read their output size, once."""
import pytest
import torch

from ssd_fast import ops
from ssd_fast.models import MultiBoxLoss

from emu_device import SKIP_REASON, host_syncs

pytestmark = [pytest.mark.emu, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]


def boxes(gen, *shape):
    c = torch.rand(*shape, 2, generator=gen) * 0.8 + 0.1
    wh = torch.rand(*shape, 2, generator=gen) * 0.3 + 0.05
    return torch.cat([c - wh / 2, c + wh / 2], -1)


def inputs(gen, B=2, P=300, G=5, C=4):
    gt = boxes(gen, B, G)
    labels = torch.randint(1, C, (B, G), generator=gen)
    labels[1, -1] = -1  # padding
    priors = boxes(gen, P)
    loc = torch.randn(B, P, 4, generator=gen) * 0.1
    logits = torch.randn(B, P, C, generator=gen)
    return {k: v.to("emu") for k, v in dict(gt=gt, labels=labels, priors=priors, loc=loc,
                                               logits=logits).items()}


def match_priors(x):
    return ops.match_priors(x["gt"], x["labels"], x["priors"])


def ssd_targets(x):
    return ops.ssd_targets(x["gt"], x["labels"], x["priors"])


def hard_negative_mining(x):
    _, labels, iou = ops.ssd_targets(x["gt"], x["labels"], x["priors"])
    loss = torch.logsumexp(x["logits"], -1) - x["logits"][..., 0]
    return ops.hard_negative_mining(loss, labels, 3.0, iou)


def multibox_loss(x):  # forward and backward
    loc_t, labels, _ = ops.ssd_targets(x["gt"], x["labels"], x["priors"])
    loc, logits = x["loc"].requires_grad_(), x["logits"].requires_grad_()
    loc_loss, conf_loss, _ = ops.multibox_loss(loc, logits, loc_t, labels)
    (loc_loss + conf_loss).backward()
    return loc.grad, logits.grad


def multibox_loss_module(x):  # what training runs, its label check off (test below)
    loss = MultiBoxLoss(x["priors"], num_classes=x["logits"].shape[-1], check_labels=False)
    loc, logits = x["loc"].requires_grad_(), x["logits"].requires_grad_()
    loc_loss, conf_loss = loss(loc, logits, x["gt"], x["labels"])
    (loc_loss + conf_loss).backward()
    return loc.grad, logits.grad


def multiclass_nms(x):
    return ops.multiclass_nms(ops.decode_boxes(x["loc"], x["priors"]), torch.softmax(x["logits"], -1))


def ssd_postprocess(x):
    return ops.ssd_postprocess(x["loc"], x["logits"], x["priors"])


SYNC_FREE = [match_priors, ssd_targets, hard_negative_mining, multibox_loss,
             multibox_loss_module, multiclass_nms, ssd_postprocess]


@pytest.mark.parametrize("op", SYNC_FREE, ids=lambda f: f.__name__)
def test_no_host_synchronisation(gen, op):
    x = inputs(gen)
    before = host_syncs()
    out = op(x)
    assert host_syncs() == before, f"{op.__name__} synchronised the host"
    assert all(t.device.type == "emu" for t in out)


@pytest.mark.parametrize("batched", [False, True])
def test_nms_synchronises_once(gen, batched):
    """The output size depends on the data: read once (the documented synchronisation)."""
    b = boxes(gen, 500).to("emu")
    s = torch.rand(500, generator=gen).to("emu")
    before = host_syncs()
    keep = (ops.batched_nms(b, s, torch.randint(0, 3, (500,), generator=gen).to("emu"), 0.5)
            if batched else ops.nms(b, s, 0.5))
    assert host_syncs() == before + 1
    assert keep.device.type == "emu" and keep.numel() > 0


def test_multibox_loss_label_check_synchronises_once(gen):
    """MultiBoxLoss looks for labels >= num_classes on the device and reads one flag back."""
    x = inputs(gen)
    loss = MultiBoxLoss(x["priors"], num_classes=x["logits"].shape[-1])
    before = host_syncs()
    loss(x["loc"], x["logits"], x["gt"], x["labels"])
    assert host_syncs() == before + 1

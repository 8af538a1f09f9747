"""Autograd of the ops. box_iou / encode / decode are as differentiable as torchvision's (IoU
losses, decoded-box losses), to any order: the forward runs the kernel, the backward
differentiates the reference, which computes the same function, and keeps that graph when asked
to (``create_graph=True``), so a second backward (``gradgradcheck``, gradient penalties) is the
reference's own. multibox_loss has a kernel of its own for the backward (multibox_loss_backward),
which runs for every backward, ``create_graph=True`` included; that op is in turn differentiable
the same way, through reference.multibox_loss_backward, so second derivatives of the loss (mask
held, as in the first) are the reference's. Every other op is not differentiable: its outputs
never require grad (see the end of the file).
"""
import torch

from . import reference


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*[t for t in inputs if isinstance(t, torch.Tensor)])
    ctx.extra = [x for x in inputs if not isinstance(x, torch.Tensor)]


def _backward_via(fn):
    def backward(ctx, *grads):
        # Views of the saved inputs, not detached copies: under create_graph=True (grad mode on
        # here) the gradient is then a differentiable function of the inputs and of `grads`. One
        # view per argument, so box_iou(x, x) gets each argument's own partial derivative.
        needs = ctx.needs_input_grad[:len(ctx.saved_tensors)]
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            tensors = [t.view_as(t) if need else t for t, need in zip(ctx.saved_tensors, needs)]
            out = fn(*tensors, *ctx.extra)
        used = [(o, g) for o, g in zip(out if isinstance(out, tuple) else (out,), grads)
                if g is not None]
        result = iter(torch.autograd.grad([o for o, _ in used],
                                          [t for t, need in zip(tensors, needs) if need],
                                          [g for _, g in used], allow_unused=True,
                                          create_graph=create_graph))
        return (*[next(result) if need else None for need in needs], *[None] * len(ctx.extra))
    return backward


# reference.box_iou divides by where(union > 0, union, 1), so its gradient stays finite.
torch.library.register_autograd("ssd_fast::box_iou", _backward_via(reference.box_iou),
                                setup_context=_setup)
torch.library.register_autograd("ssd_fast::encode_boxes", _backward_via(reference.encode_boxes),
                                setup_context=_setup)
torch.library.register_autograd("ssd_fast::decode_boxes", _backward_via(reference.decode_boxes),
                                setup_context=_setup)


def _multibox_setup(ctx, inputs, output):
    loc, conf_logits, loc_targets, labels, _ = inputs
    ctx.save_for_backward(loc, conf_logits, loc_targets, labels, output[2])


def _multibox_backward(ctx, grad_loc_loss, grad_conf_loss, _grad_mask):
    loc, conf_logits, loc_targets, labels, mask = ctx.saved_tensors
    zero = conf_logits.new_zeros(())
    grads = [zero if g is None else g.to(conf_logits.dtype) for g in (grad_loc_loss, grad_conf_loss)]
    args = (*grads, loc, conf_logits, loc_targets, labels, mask)
    if torch.is_grad_enabled():  # create_graph=True: the kernel, with a differentiable node
        grad_loc, grad_conf = torch.ops.ssd_fast.multibox_loss_backward(*args)
    else:  # straight to the kernel, past the Python autograd kernel below (~3 us a call)
        with torch._C._AutoDispatchBelowAutograd():
            grad_loc, grad_conf = torch.ops.ssd_fast.multibox_loss_backward(*args)
    return grad_loc, grad_conf, None, None, None


torch.library.register_autograd("ssd_fast::multibox_loss", _multibox_backward,
                                setup_context=_multibox_setup)
torch.library.register_autograd("ssd_fast::multibox_loss_backward",
                                _backward_via(reference.multibox_loss_backward), setup_context=_setup)


# The other ops are not differentiable (indices, masks, matching, NMS: SPEC gives them no
# gradient; Caffe's MatchBBox and DetectionOutput have no backward either), so the Autograd key
# falls through to the kernel: their outputs never require grad, whatever the inputs do, and no
# autograd node is built (without this, torch's autograd fallback hands float outputs such as
# matched_iou or det_scores requires_grad=True and a grad_fn that cannot run).
_NON_DIFFERENTIABLE = torch.library.Library("ssd_fast", "IMPL")
for _op in ("match_priors", "ssd_targets", "hard_negative_mining", "nms", "batched_nms",
            "multiclass_nms", "ssd_postprocess"):
    _NON_DIFFERENTIABLE.impl(_op, torch.library.fallthrough_kernel, "Autograd")

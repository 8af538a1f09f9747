"""Backward formulas of the differentiable ops. box_iou / encode / decode are as differentiable
as torchvision's (IoU losses, decoded-box losses): the forward runs the kernel, the backward
differentiates the reference, which computes the same function. multibox_loss has a kernel of
its own for the backward (multibox_loss_backward)."""
import torch

from . import reference


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*[t for t in inputs if isinstance(t, torch.Tensor)])
    ctx.extra = [x for x in inputs if not isinstance(x, torch.Tensor)]


def _backward_via(fn):
    def backward(ctx, grad):
        tensors = [t.detach().requires_grad_(need)
                   for t, need in zip(ctx.saved_tensors, ctx.needs_input_grad)]
        with torch.enable_grad():
            out = fn(*tensors, *ctx.extra)
            wrt = [t for t in tensors if t.requires_grad]
            grads = iter(torch.autograd.grad(out, wrt, grad, allow_unused=True))
        return (*[next(grads) if t.requires_grad else None for t in tensors],
                *[None] * len(ctx.extra))
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
    grad_loc, grad_conf = torch.ops.ssd_fast.multibox_loss_backward(
        *grads, loc, conf_logits, loc_targets, labels, mask)
    return grad_loc, grad_conf, None, None, None


torch.library.register_autograd("ssd_fast::multibox_loss", _multibox_backward,
                                setup_context=_multibox_setup)

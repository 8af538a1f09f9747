"""Backward formulas of the differentiable box ops, so that box_iou / encode / decode are as
differentiable as torchvision's (IoU losses, decoded-box losses). The forward runs the kernel;
the backward differentiates the reference, which computes the same function."""
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

"""TorchScript: ops.nms, ops.batched_nms and ops.box_iou compile with torch.jit.script, as
torchvision's do, into graphs that call torch.ops.ssd_fast.*, and give the eager results; a
scripted module that calls them saves and loads. (The other wrappers are not scriptable: use
torch.compile or torch.export, which trace every wrapper.)"""
import io

import pytest
import torch

from ssd_fast import ops

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def _boxes(gen, n, scale=100.0):
    xy = torch.rand(n, 2, generator=gen) * scale
    return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen) * scale / 3], 1)


def _cases(gen):
    b = _boxes(gen, 300)
    s = torch.rand(300, generator=gen)
    idxs = torch.randint(0, 5, (300,), generator=gen)
    return {
        "nms": (ops.nms, (b, s, 0.5)),
        "nms float64": (ops.nms, (b.double(), s.double(), 0.3)),
        "batched_nms": (ops.batched_nms, (b, s, idxs, 0.5)),
        "batched_nms of no boxes": (ops.batched_nms, (b[:0], s[:0], idxs[:0], 0.5)),
        "box_iou": (ops.box_iou, (b, b[:40])),
        "box_iou batched": (ops.box_iou, (b.view(3, 100, 4), b[:40])),
        "box_iou xywh": (ops.box_iou, (b, b[:40], "xywh")),
        "box_iou cxcywh": (ops.box_iou, (b, b[:40], "cxcywh")),
        "box_iou int64": (ops.box_iou, (b.long(), b[:40].long())),
    }


CASES = list(_cases(torch.Generator()))


@pytest.mark.parametrize("case", CASES)
def test_scripted_wrapper_gives_the_eager_result(device, gen, case):
    fn, args = _cases(gen)[case]
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
    scripted = torch.jit.script(fn)
    assert f"ssd_fast::{fn.__name__}" in str(scripted.graph)
    got, expected = scripted(*args), fn(*args)
    assert got.dtype == expected.dtype and got.device == expected.device
    assert torch.equal(got, expected)


class _Tail(torch.nn.Module):
    def forward(self, boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor):
        keep = ops.batched_nms(boxes, scores, idxs, 0.5)
        return keep, ops.nms(boxes, scores, 0.5), ops.box_iou(boxes[keep], boxes)


# torch deprecates TorchScript's save/load in favour of torch.export; what is tested is that a
# scripted caller of ssd_fast's ops survives them, as torchvision's users' models do
@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_a_scripted_module_saves_and_loads(gen):
    b, s, idxs, _ = _cases(gen)["batched_nms"][1]
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(_Tail()), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    for got, expected in zip(loaded(b, s, idxs), _Tail()(b, s, idxs)):
        assert torch.equal(got, expected)


def test_scripted_box_iou_refuses_a_rotated_format(gen):
    b = _boxes(gen, 5)
    with pytest.raises(torch.jit.Error, match="box_iou: fmt must be 'xyxy', 'xywh' or 'cxcywh'"):
        torch.jit.script(ops.box_iou)(torch.cat([b, b[:, :1]], 1), b, "cxcywhr")


@pytest.mark.parametrize("name", ["encode_boxes", "match_priors", "multiclass_nms"])
def test_the_other_wrappers_say_what_to_use_instead(name):
    # not scriptable (their arguments take numbers of several types); the docstring says so
    assert "use ``torch.compile``" in ops.__doc__ and "torch.export" in ops.__doc__
    with pytest.raises(RuntimeError):  # torch.jit.frontend's errors are RuntimeErrors
        torch.jit.script(getattr(ops, name))

"""End-to-end inference on the CPU, one run, same threads: ``SSD.detect`` in PyTorch eager, the
same detector exported by :func:`ssd_fast.export.to_onnx` in onnxruntime, and torchvision's
``ssd300_vgg16`` / ``ssdlite320_mobilenet_v3_large`` in eval mode (its transform, network and
postprocess) at the same input size and class count. Each total is split into the network
and the detection tail, each part timed on its own:

- ssd_fast eager: ``model(images)`` and ``ops.ssd_postprocess`` on its outputs;
- onnxruntime: the network alone exported the same way, and the whole graph (tail = the
  difference);
- torchvision: ``transform`` + ``backbone`` + ``head``, and ``postprocess_detections`` +
  ``transform.postprocess`` on the head's outputs.

Weights are random (no download), scaled as in the export tests so that scores are spread:
many candidates pass the 0.01 score threshold, the heavy case for a tail.
Used by ``ssd-fast bench --inference`` and benchmarks/bench_inference.py; timed by
:func:`ssd_fast.bench.timer.median_seconds` in the former, by pytest-benchmark on the same clock in
the latter.
"""
import os
import tempfile
from typing import Callable, Dict, List

import torch

from .. import ops
from ..models import ssd300_vgg16, ssdlite
from .timer import median_seconds

PAIRS = {  # ssd_fast model, torchvision builder, input size
    "ssd300_vgg16": (lambda: ssd300_vgg16(num_classes=21), "ssd300_vgg16", 300),
    "ssdlite320": (lambda: ssdlite(num_classes=21, image_size=320), "ssdlite320_mobilenet_v3_large", 320),
}

#: What :meth:`Prepared.calls` times, in its order: each implementation's total, network, tail.
CALLS = ("eager", "eager_network", "eager_tail", "onnxruntime", "onnxruntime_network", "torchvision",
         "torchvision_network", "torchvision_tail")


def spread_heads(model, images, logit_std=2.0, offset_std=0.5):
    """Scale each head's last conv so that on ``images`` the logits have std ``logit_std`` and
    the offsets ``offset_std`` (random weights otherwise saturate or flatten the scores)."""
    return _scale_heads(model, lambda: model.eval()(images), model.loc_head, model.conf_head,
                        logit_std, offset_std)


def _scale_heads(model, forward, loc_heads, conf_heads, logit_std=2.0, offset_std=0.5):
    """Run ``forward()``, measure the std of each head module's output, then multiply each
    head's last conv (weight and bias) by target / measured; returns ``model``."""
    measured = {}
    heads = [*loc_heads, *conf_heads]
    hooks = [h.register_forward_hook(lambda m, i, out: measured.__setitem__(m, out.std().item())) for h in heads]
    with torch.no_grad():
        forward()
        for hook in hooks:
            hook.remove()
        for h in heads:
            last = [m for m in h.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            factor = (offset_std if any(h is x for x in loc_heads) else logit_std) / measured[h]
            last.weight.mul_(factor)
            if last.bias is not None:
                last.bias.mul_(factor)
    return model


class _Network(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images)


def _session(path, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _torchvision_model(name, size):
    """torchvision's model with random weights (kaiming convs, unit batch norms, L2Norm 20),
    its heads scaled as :func:`spread_heads` does."""
    import torchvision
    gen = torch.Generator().manual_seed(0)
    with torch.device("meta"):  # skips the 138M-parameter init; random tensors follow
        tv = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None, num_classes=21)
    tv.to_empty(device="cpu").eval()
    with torch.no_grad():
        for key, p in tv.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / p[0].numel()) ** 0.5)
            else:
                p.fill_(20.0 if "scale_weight" in key else 1.0 if key.endswith("weight") else 0.0)
        for key, b in tv.named_buffers():
            if key.endswith("running_var"):
                b.fill_(1)
            elif b.dtype.is_floating_point:
                b.zero_()
        image = torch.rand(3, size, size, generator=gen)
    head = tv.head
    return _scale_heads(tv, lambda: head(list(tv.backbone(tv.transform([image])[0].tensors).values())),
                        head.regression_head.module_list, head.classification_head.module_list)


def _torchvision_parts(tv, images: List[torch.Tensor]):
    """``(network(), tail(features...))`` callables for torchvision's SSD family."""
    def network():
        batch, _ = tv.transform(images)
        features = list(tv.backbone(batch.tensors).values())
        return batch, features, tv.head(features)

    batch, features, head = network()
    anchors = tv.anchor_generator(batch, features)
    sizes = [tuple(im.shape[-2:]) for im in images]

    def tail():
        dets = tv.postprocess_detections(head, anchors, batch.image_sizes)
        return tv.transform.postprocess(dets, batch.image_sizes, sizes)
    return network, tail


class Prepared:
    """One model pair made ready: ssd_fast's model, its two ONNX sessions, torchvision's model."""

    def __init__(self, name: str, folder: str, threads: int):
        from ..export import to_onnx

        build, self.tv_name, self.size = PAIRS[name]
        self.name = name
        torch.manual_seed(0)
        size = self.size
        self.model = spread_heads(build().eval(), torch.randn(2, 3, size, size))
        whole, net_only = os.path.join(folder, f"{name}.onnx"), os.path.join(folder, f"{name}_net.onnx")
        to_onnx(self.model, whole)
        torch.onnx.export(_Network(self.model).eval(), (torch.zeros(1, 3, size, size),), net_only, dynamo=True,
                          input_names=["images"], external_data=False,
                          dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}}, verbose=False)
        self.ort_whole, self.ort_net = _session(whole, threads), _session(net_only, threads)
        self.tv = _torchvision_model(self.tv_name, size)
        self._calls = {}

    def calls(self, batch: int) -> Dict[str, Callable]:
        """The callables to time at ``batch``, their outputs checked first: the ONNX network
        gives the model's head outputs, the ONNX detector SSD.detect's detection counts."""
        model, size = self.model, self.size
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        loc, conf = model(x)
        feed = {"images": x.numpy()}
        for got, expected in zip(self.ort_net.run(None, feed), (loc, conf)):
            torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-3, atol=1e-3)
        num, expected = torch.from_numpy(self.ort_whole.run(None, feed)[3]), model.detect(x)[3]
        if not torch.equal(num, expected):
            raise RuntimeError(f"bench: {self.name} in onnxruntime finds {num.tolist()} detections, "
                               f"SSD.detect {expected.tolist()}")
        pixels = [(im - im.min()) / (im.max() - im.min()) for im in x]  # torchvision takes 0..1
        tv_network, tv_tail = _torchvision_parts(self.tv, pixels)
        kw = model.postprocess_defaults
        return {
            "eager": lambda: model.detect(x),
            "eager_network": lambda: model(x),
            "eager_tail": lambda: ops.ssd_postprocess(loc, conf, model.priors, model.variances, **kw),
            "onnxruntime": lambda: self.ort_whole.run(None, feed),
            "onnxruntime_network": lambda: self.ort_net.run(None, feed),
            "torchvision": lambda: self.tv(pixels),
            "torchvision_network": tv_network,
            "torchvision_tail": tv_tail,
        }


def run(batches=(1, 8), threads=2, min_seconds=1.0, models=tuple(PAIRS)) -> List[Dict]:
    """One row per (model, batch): median ms of each implementation's total, network, tail
    (onnxruntime's tail: its total less its network)."""
    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for name in models:
            pair = Prepared(name, tmp, threads)
            for batch in batches:
                calls = pair.calls(batch)
                t = {k: median_seconds(calls[k], min_seconds=min_seconds, min_runs=3) for k in CALLS}
                t["onnxruntime_tail"] = max(0.0, t["onnxruntime"] - t["onnxruntime_network"])
                rows.append({"model": name, "torchvision_model": pair.tv_name, "size": pair.size, "batch": batch,
                             "threads": threads, **{k: v * 1e3 for k, v in t.items()}})
    return rows


HEADER = (f"{'model':<14} {'batch':>5} {'eager ms':>10} {'(net+tail)':>16} {'onnxrt ms':>10} {'(net+tail)':>16} "
          f"{'torchvision ms':>14} {'(net+tail)':>16}")


def format_row(r) -> str:
    def split(k):
        return f"({r[k + '_network']:.1f}+{r[k + '_tail']:.1f})"
    return (f"{r['model']:<14} {r['batch']:>5} {r['eager']:>10.1f} {split('eager'):>16} {r['onnxruntime']:>10.1f} "
            f"{split('onnxruntime'):>16} {r['torchvision']:>14.1f} {split('torchvision'):>16}")

"""The SSD model (SPEC §3): default boxes, SSD300/SSD512 on VGG16, SSDLite, the MultiBox loss,
the slim VGG-style SSD of the demo, weight conversion from torchvision and ssd.pytorch, and checkpoints.

```python
from ssd_fast.models import ssd300_vgg16, MultiBoxLoss, save_checkpoint, load_model

model = ssd300_vgg16(num_classes=21, priors="voc")    # 8732 Caffe default boxes
loc, conf = model(images)                             # [B, 8732, 4], [B, 8732, 21]
loss_loc, loss_conf = MultiBoxLoss.for_model(model)(loc, conf, gt_boxes, gt_labels)
boxes, scores, labels, n = model.eval().detect(images)  # boxes in pixels of the input
save_checkpoint("model.pt", model, epoch=3)
model = load_model("model.pt")                        # architecture, classes, priors, weights
```
"""
from . import convert
from .checkpoint import MODELS, build_model, load_checkpoint, load_model, model_from_config, save_checkpoint
from .loss import MultiBoxLoss
from .priors import PRESETS, PriorSpec, get_prior_spec, prior_boxes, ssd_sizes
from .ssd import DEFAULT_POSTPROCESS, SSD
from .ssdlite import ssd_tiny, ssd_tiny_priors, ssdlite, ssdlite_priors
from .vgg import L2Norm, ssd300_vgg16, ssd512_vgg16

__all__ = [
    "SSD", "ssd300_vgg16", "ssd512_vgg16", "ssdlite", "ssd_tiny", "MultiBoxLoss",
    "PriorSpec", "PRESETS", "prior_boxes", "get_prior_spec", "ssd_sizes", "ssdlite_priors", "ssd_tiny_priors",
    "L2Norm", "DEFAULT_POSTPROCESS", "convert",
    "MODELS", "build_model", "model_from_config", "save_checkpoint", "load_checkpoint", "load_model",
]

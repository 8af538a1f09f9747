"""The SSD model (SPEC §3): default boxes, SSD300/SSD512 on VGG16, SSDLite, the MultiBox loss,
the slim VGG-style SSD of the demo, weight conversion from torchvision and ssd.pytorch, and the
builders by name (``MODELS``, ``build_model``). Checkpoints: :mod:`ssd_fast.checkpoint`.

```python
from ssd_fast.models import ssd300_vgg16, MultiBoxLoss, build_model

model = ssd300_vgg16(num_classes=21, priors="voc")    # 8732 Caffe default boxes
loc, conf = model(images)                             # [B, 8732, 4], [B, 8732, 21]
loss_loc, loss_conf = MultiBoxLoss.for_model(model)(loc, conf, gt_boxes, gt_labels)
boxes, scores, labels, n = model.eval().detect(images)  # boxes in pixels of the input
model = build_model("ssdlite", num_classes=4, image_size=128)
```
"""
from . import convert
from .loss import MultiBoxLoss
from .priors import PRESETS, PriorSpec, get_prior_spec, prior_boxes, ssd_sizes
from .registry import MODELS, build_model, model_from_config
from .ssd import DEFAULT_POSTPROCESS, SSD
from .ssdlite import ssd_tiny, ssd_tiny_priors, ssdlite, ssdlite_priors
from .vgg import L2Norm, ssd300_vgg16, ssd512_vgg16

__all__ = [
    "SSD", "ssd300_vgg16", "ssd512_vgg16", "ssdlite", "ssd_tiny", "MultiBoxLoss",
    "PriorSpec", "PRESETS", "prior_boxes", "get_prior_spec", "ssd_sizes", "ssdlite_priors", "ssd_tiny_priors",
    "L2Norm", "DEFAULT_POSTPROCESS", "convert",
    "MODELS", "build_model", "model_from_config",
]

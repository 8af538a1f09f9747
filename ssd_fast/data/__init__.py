"""Datasets (SPEC §4), augmentation and batching.

```python
from ssd_fast.data import build_dataset, TrainTransform, Augmented, collate
ds = build_dataset("synthetic:seed=0,n=2000,size=160")     # or "voc:ROOT,year=2007,split=test"
image, target = ds[0]             # uint8 [H, W, 3] RGB; boxes [G, 4] pixels, labels, difficult
```
Every dataset is a :class:`DetectionDataset` (``classes``, background first; ``__len__``,
``__getitem__``, ``target(i)``, ``image_id(i)``, ``cache()``, ``files``), and every format is one
:func:`register_format` on its class (:mod:`.dataset`; :func:`formats_help` lists them).
"""
from .dataset import FORMATS, DetectionDataset, Option, Target, register_format
from .loader import Augmented, IterationBatchSampler, collate
from .spec import build_dataset, formats_help, parse_spec
from .synthetic import SyntheticDataset
from .transforms import MEAN, STD, TestTransform, TrainTransform, normalize_image

__all__ = ["build_dataset", "parse_spec", "formats_help", "DetectionDataset", "Target", "Option",
           "register_format", "FORMATS", "SyntheticDataset", "Augmented", "collate",
           "IterationBatchSampler", "TrainTransform", "TestTransform", "MEAN", "STD",
           "normalize_image"]

"""Training and evaluation (SPEC §4).

```python
from ssd_fast.engine import Trainer, TrainConfig, evaluate
Trainer(model, dataset, TrainConfig(iterations=1000), out_dir="runs/x").train()
metrics = evaluate(model, test_dataset)          # {"voc07_map50": ..., "voc12_map50": ...}
```
"""
from .config import ConfigError, TrainConfig
from .distributed import init_from_env, is_main, world
from .evaluate import detect_dataset, evaluate
from .metrics import average_precision, coco_ap, voc_ap_per_class, voc_map
from .train import NonFiniteTraining, Trainer, lr_factor, native_bf16

__all__ = ["Trainer", "TrainConfig", "ConfigError", "NonFiniteTraining", "lr_factor", "native_bf16", "evaluate", "detect_dataset", "voc_map",
           "voc_ap_per_class", "average_precision", "coco_ap", "world", "init_from_env", "is_main"]

"""The model builders by name: what a checkpoint's ``config["arch"]`` and ``--arch`` name."""
from typing import Any, Callable, Dict

from .priors import PriorSpec
from .ssd import SSD
from .ssdlite import ssd_tiny, ssdlite
from .vgg import ssd300_vgg16, ssd512_vgg16

MODELS: Dict[str, Callable[..., SSD]] = {
    "ssd300_vgg16": ssd300_vgg16,
    "ssd512_vgg16": ssd512_vgg16,
    "ssdlite": ssdlite,
    "ssd_tiny": ssd_tiny,
}


def build_model(arch: str, **kwargs) -> SSD:
    """``MODELS[arch](**kwargs)``, e.g. ``build_model("ssdlite", num_classes=4, image_size=128)``."""
    if arch not in MODELS:
        raise ValueError(f"arch: unknown model {arch!r}; known: {sorted(MODELS)}")
    return MODELS[arch](**kwargs)


def model_from_config(config: Dict[str, Any]) -> SSD:
    """Rebuild an (untrained) model from ``SSD.config``."""
    model = build_model(config["arch"], num_classes=config["num_classes"],
                        priors=PriorSpec.from_dict(config["priors"]), classes=config.get("classes"),
                        **config.get("arch_kwargs", {}))
    model.postprocess_defaults.update(config.get("postprocess_defaults", {}))
    return model

"""Model builders by name, and checkpoints that rebuild their model alone.

A checkpoint is a ``torch.save``'d dict::

    {"format": "ssd_fast.checkpoint", "version": 1,
     "config": model.config,            # arch, arch_kwargs, num_classes, classes, priors, ...
     "state_dict": model.state_dict(),
     **extra}                           # whatever the caller adds (epoch, optimizer, metrics)

It holds only tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``.
"""
import os
from typing import Any, Callable, Dict

import torch

from ..outputs import write_atomically
from .priors import PriorSpec
from .ssd import SSD
from .ssdlite import ssd_tiny, ssdlite
from .vgg import ssd300_vgg16, ssd512_vgg16

FORMAT, VERSION = "ssd_fast.checkpoint", 1
MODELS: Dict[str, Callable[..., SSD]] = {
    "ssd300_vgg16": ssd300_vgg16,
    "ssd512_vgg16": ssd512_vgg16,
    "ssdlite": ssdlite,
    "ssd_tiny": ssd_tiny,
}
_RESERVED = ("format", "version", "config", "state_dict")


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


def save_checkpoint(path, model: SSD, **extra) -> None:
    """Write ``model`` (config + weights) and ``extra`` to ``path`` atomically: into a temporary
    file in the same directory, flushed to disk, then renamed over ``path``, so an existing
    file is either kept whole or replaced whole, never left half-written
    (:func:`ssd_fast.outputs.write_atomically`: the mode of any other output, temporaries of
    killed writers removed). :class:`ssd_fast.outputs.OutputError` if the destination refuses
    it (full, read-only)."""
    if not isinstance(model, SSD):
        raise TypeError(f"save_checkpoint: model must be an ssd_fast.models.SSD, got {type(model).__name__}")
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"save_checkpoint: extra keys {clash} are reserved")
    payload = {"format": FORMAT, "version": VERSION, "config": model.config,
               "state_dict": model.state_dict(), **extra}
    write_atomically(path, lambda f: torch.save(payload, f))


def load_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    """The checkpoint dict (module docstring). ``ValueError`` "not an ssd_fast checkpoint" if
    ``path`` is not one: another kind of file, a damaged or cut-short one, a bare state dict,
    or a pickle of arbitrary objects (only plain data is loaded, never code)."""
    name = os.fspath(path)
    device = torch.device(map_location) if isinstance(map_location, (str, torch.device)) else None
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"map_location={map_location!r}: no CUDA device is available")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # torch.load raises whatever its unpickler meets in a foreign file
        lines = str(e).strip().splitlines()
        why = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
        raise ValueError(f"{name!r}: not an ssd_fast checkpoint (or a damaged one): torch.load failed "
                         f"({why[:300]})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{name!r}: not an ssd_fast checkpoint: no format={FORMAT!r} (a bare state "
                         f"dict? build the model and use load_state_dict)")
    if ckpt.get("version") != VERSION:
        raise ValueError(f"{name!r}: checkpoint version {ckpt.get('version')!r}, this "
                         f"ssd_fast reads version {VERSION}")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{name!r}: a damaged ssd_fast checkpoint: no config or state_dict")
    return ckpt


def load_model(path, device="cpu") -> SSD:
    """The model saved at ``path`` (architecture, classes, priors and weights), on ``device``,
    in eval mode. ``ValueError`` if ``path`` is not an ssd_fast checkpoint, or a damaged one."""
    ckpt = load_checkpoint(path, map_location=device)
    try:
        model = model_from_config(ckpt["config"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        lines = str(e).strip().splitlines()
        raise ValueError(f"{os.fspath(path)!r}: a damaged ssd_fast checkpoint: its model cannot be rebuilt "
                         f"({type(e).__name__}: {lines[0] if lines else ''})") from e
    return model.to(device).eval()

"""The checkpoint format, written, read and checked here only.

A checkpoint is a ``torch.save``'d dict::

    {"format": "ssd_fast.checkpoint", "version": 1,
     "config": model.config,            # arch, arch_kwargs, num_classes, classes, priors, ...
     "state_dict": model.state_dict(),
     **extra}                           # whatever the caller adds (epoch, optimizer, metrics)

A training checkpoint (``checkpoint.pt``, :func:`save_training_checkpoint`) adds the state that
resumes a run exactly, :data:`TRAINING_STATE`: the iteration, the skipped steps, the optimizer,
LR scheduler and grad scaler states and the torch RNG states (and ``train_config``, for the
record). A model file (``model.pt``) holds the weights only.

It holds only tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``.

```python
from ssd_fast.checkpoint import save_checkpoint, load_model
save_checkpoint("model.pt", model, epoch=3)
model = load_model("model.pt")                        # architecture, classes, priors, weights
```
"""
import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

import torch

from .models.registry import model_from_config
from .models.ssd import SSD
from .outputs import write_atomically

FORMAT, VERSION = "ssd_fast.checkpoint", 1
TRAINING_STATE = ("iteration", "skipped_steps", "optimizer", "scheduler", "scaler", "rng")
_RESERVED = ("format", "version", "config", "state_dict")


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


def model_from_checkpoint(ckpt: Dict[str, Any], path) -> SSD:
    """The model of a loaded checkpoint ``ckpt`` (read from ``path``, which the errors name),
    its weights in, on the CPU. ``ValueError`` if its config or weights do not make a model."""
    try:
        model = model_from_config(ckpt["config"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        lines = str(e).strip().splitlines()
        raise ValueError(f"{os.fspath(path)!r}: a damaged ssd_fast checkpoint: its model cannot be rebuilt "
                         f"({type(e).__name__}: {lines[0] if lines else ''})") from e
    return model


def load_model(path, device="cpu") -> SSD:
    """The model saved at ``path`` (architecture, classes, priors and weights), on ``device``,
    in eval mode. ``ValueError`` if ``path`` is not an ssd_fast checkpoint, or a damaged one."""
    return model_from_checkpoint(load_checkpoint(path, map_location=device), path).to(device).eval()


# -- training checkpoints ---------------------------------------------------------------------

def missing_training_state(ckpt: Dict[str, Any]) -> list:
    """The keys of :data:`TRAINING_STATE` that ``ckpt`` lacks (all of them in a model file)."""
    return [k for k in TRAINING_STATE if k not in ckpt]


def save_training_checkpoint(path, model: SSD, optimizer, scheduler, scaler, iteration: int, skipped_steps: int,
                             train_config) -> None:
    """Write a training checkpoint (:func:`save_checkpoint`, atomically): ``model`` and what
    :func:`restore_training` needs to continue the run exactly, with the torch RNG states of
    now; ``train_config`` (a dataclass) for the record."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    save_checkpoint(path, model, iteration=iteration, skipped_steps=skipped_steps, optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), rng=rng,
                    train_config=dataclasses.asdict(train_config))


def load_training_checkpoint(path, num_classes: Optional[int] = None, against: str = "the model",
                             map_location="cpu") -> Dict[str, Any]:
    """The training checkpoint at ``path``, checked: an ssd_fast checkpoint
    (:func:`load_checkpoint`), holding :data:`TRAINING_STATE`, and, given ``num_classes``, with
    that many classes. ``ValueError`` naming ``path`` first, then what is wrong; ``against``
    names what has ``num_classes`` in that message."""
    name = os.fspath(path)
    ckpt = load_checkpoint(path, map_location=map_location)
    missing = missing_training_state(ckpt)
    if missing:
        raise ValueError(f"{name!r} is a weights-only checkpoint (no {', '.join(missing)}); resume from a "
                         f"training checkpoint (checkpoint.pt)")
    have = ckpt["config"].get("num_classes")
    if num_classes is not None and have != num_classes:
        raise ValueError(f"{name!r} has num_classes={have}, {against} has {num_classes} (background included)")
    return ckpt


def restore_training(ckpt: Dict[str, Any], model: SSD, optimizer, scheduler, scaler) -> Tuple[int, int]:
    """Put a training checkpoint (:func:`load_training_checkpoint`) back into ``model``,
    ``optimizer``, ``scheduler``, ``scaler`` and the torch RNGs; returns ``(iteration,
    skipped_steps)``. Tensors move to where the model's and optimizer's live."""
    model.load_state_dict(ckpt["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in rng["cuda"]])
    return int(ckpt["iteration"]), int(ckpt["skipped_steps"])

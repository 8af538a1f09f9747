"""ssd_fast: fast, exact SSD ops (CPU and CUDA kernels) and the SSD model built on them."""
import glob as _glob
import os as _os

import torch as _torch

__version__ = "0.1.0"

def _rebuild_hint():
    here = _os.path.dirname(_os.path.abspath(__file__))
    root = _os.path.dirname(here)
    if _os.path.exists(_os.path.join(root, "setup.py")):  # a source checkout
        return f"cd {root} && pip install --no-build-isolation -e ."
    return "pip install --no-build-isolation --force-reinstall <path to the ssd_fast source checkout>"


def _load_extension():
    here = _os.path.dirname(_os.path.abspath(__file__))
    if not _glob.glob(_os.path.join(here, "_C*.so")) and not _glob.glob(_os.path.join(here, "_C*.pyd")):
        raise ImportError(f"ssd_fast: the compiled kernels (ssd_fast/_C*.so) are not built in "
                          f"{here}. Build them with:\n    {_rebuild_hint()}")
    try:
        from . import _C
    except ImportError as e:  # typically undefined symbols: built against another torch
        raise ImportError(
            f"ssd_fast: the compiled kernels ssd_fast._C failed to load ({e}). They were most "
            f"likely built against another torch than the installed {_torch.__version__}. "
            f"Rebuild them with:\n    {_rebuild_hint()}"
        ) from e
    if _C.TORCH_VERSION != _torch.__version__:
        raise ImportError(
            f"ssd_fast: the compiled kernels were built against torch {_C.TORCH_VERSION}, but "
            f"torch {_torch.__version__} is installed. Rebuild them with:\n    {_rebuild_hint()}"
        )
    return _C


_C = _load_extension()


def has_cuda_kernels() -> bool:
    """True when the CUDA kernels were compiled in (a GPU is not needed for that)."""
    return bool(_C.WITH_CUDA)


from . import ops  # noqa: E402  (registers the fake kernels; needs _C loaded first)

# torchvision is optional: ssd_fast.torchvision_patch (which imports it) is loaded on first use.
_TORCHVISION_PATCH = ("patch_torchvision", "unpatch_torchvision", "torchvision_ops")


def __getattr__(name):
    if name in _TORCHVISION_PATCH:
        from . import torchvision_patch
        return getattr(torchvision_patch, name)
    raise AttributeError(f"module 'ssd_fast' has no attribute {name!r}")


__all__ = ["ops", "has_cuda_kernels", "__version__", *_TORCHVISION_PATCH]

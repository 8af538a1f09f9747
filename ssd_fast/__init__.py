"""ssd_fast: fast, exact SSD ops (CPU and CUDA kernels) and the SSD model built on them."""
import os as _os

import torch as _torch

__version__ = "0.1.0"

_REBUILD = "pip install --no-build-isolation -e ."  # from the repository root


def _load_extension():
    try:
        from . import _C
    except ImportError as e:  # missing, or built against another torch (undefined symbols)
        here = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
        raise ImportError(
            f"ssd_fast: could not load the compiled kernels ssd_fast._C ({e}). Either they were "
            f"never built, or they were built against another torch than the installed "
            f"{_torch.__version__}. Rebuild them with:\n    cd {here} && {_REBUILD}"
        ) from e
    if _C.TORCH_VERSION != _torch.__version__:
        raise ImportError(
            f"ssd_fast: the compiled kernels were built against torch {_C.TORCH_VERSION}, but "
            f"torch {_torch.__version__} is installed. Rebuild them with:\n    {_REBUILD}"
        )
    return _C


_C = _load_extension()


def has_cuda_kernels() -> bool:
    """True when the CUDA kernels were compiled in (a GPU is not needed for that)."""
    return bool(_C.WITH_CUDA)


from . import ops  # noqa: E402  (registers the fake kernels; needs _C loaded first)

__all__ = ["ops", "has_cuda_kernels", "__version__"]

"""Build ssd_fast._C: C++ CPU kernels, plus CUDA kernels when CUDA is available or forced.

Environment knobs:
  FORCE_CUDA=1 / 0        build the CUDA kernels (no GPU needed) / never build them.
                          Unset: CUDA when torch has CUDA, a toolkit is found and a GPU
                          is visible (torchvision's rule: a GPU-less machine gets the quick
                          CPU-only build unless it asks).
  CUDA_HOME               toolkit root; else /usr/local/cuda; else asked of the nvcc on PATH.
  TORCH_CUDA_ARCH_LIST    e.g. "9.0" or "8.0;9.0+PTX" (read by torch.utils.cpp_extension).
  MAX_JOBS                parallel compile jobs (read by ninja through torch).
  NVCC_FLAGS              extra nvcc flags, split like a shell line.
  DEBUG=1                 -O0 -g (and -lineinfo for nvcc).
  SSD_FAST_EMU=1 / asan   also build the test-only module ssd_fast._C_emu, or build only
                          ssd_fast._C_emu_asan beside an existing build: the emulated CUDA
                          device of the tests, built by csrc/emu/build.py. Never part of
                          ssd_fast._C.
"""
import glob
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import sysconfig

from setuptools import setup


def _log(msg):
    print(f"[ssd_fast setup] {msg}", flush=True)


def find_cuda_home():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    # the toolkit root as nvcc itself reports it (nvcc on PATH may be a wrapper script)
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "x.cu"], capture_output=True, text=True,
                             timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^#\$ TOP=(.+)$", out, re.M)
    return os.path.realpath(m.group(1).strip()) if m else None


def pip_cuda_include_dirs(cuda_home):
    """Headers of the pip-installed CUDA libraries, when the toolkit lacks them (cusparse.h...)."""
    if os.path.exists(os.path.join(cuda_home, "include", "cusparse.h")):
        return []
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    for layout in ("cu1*", "*"):  # cu13: nvidia/cu13/include; cu12: nvidia/<library>/include
        dirs = sorted({d for root in roots
                       for d in glob.glob(os.path.join(root, "nvidia", layout, "include"))})
        if dirs:
            return dirs
    return []


def want_cuda(torch, cuda_home):
    force = os.environ.get("FORCE_CUDA", "")
    if force == "0":
        return False, "FORCE_CUDA=0"
    if force == "1":
        if cuda_home is None:
            sys.exit("[ssd_fast setup] FORCE_CUDA=1 but no CUDA toolkit found: set CUDA_HOME")
        if torch.version.cuda is None:
            sys.exit(f"[ssd_fast setup] FORCE_CUDA=1 but torch {torch.__version__} is a CPU build")
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} has no CUDA"
    if cuda_home is None:
        return False, "no CUDA toolkit found (set CUDA_HOME or FORCE_CUDA=1)"
    if not torch.cuda.is_available():
        return False, "no GPU visible (FORCE_CUDA=1 compiles the CUDA kernels anyway)"
    return True, f"torch has CUDA {torch.version.cuda}, a toolkit was found and a GPU is visible"


def extensions():
    cuda_home = find_cuda_home()
    if cuda_home:
        # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
        os.environ["CUDA_HOME"] = cuda_home
    import torch
    from torch.utils import cpp_extension

    with_cuda, why = want_cuda(torch, cuda_home)
    debug = os.environ.get("DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/ops/*.cpp") +
                     glob.glob("csrc/ops/cpu/**/*.cpp", recursive=True))
    defines = [f"-DSSD_FAST_TORCH_VERSION={torch.__version__}"]
    # Contraction into FMA is off so the CPU and CUDA kernels round every IoU identically.
    # The C++ standard is left to torch.utils.cpp_extension (torch >= 2.10 needs C++20).
    # -fno-trapping-math lets gcc vectorise the select-heavy IoU loop; results are unchanged.
    # -g0 undoes the -g of Python's CFLAGS: debug info nearly doubles the compile time of
    # torch's headers (a fresh CPU-only build: 70 -> 40 s on 2 cores).
    cxx = opt + ([] if debug else ["-g0"]) + ["-ffp-contract=off", "-fno-trapping-math",
                                              "-fopenmp", *defines]
    include_dirs = [os.path.abspath("csrc")]
    compile_args = {"cxx": cxx}
    Extension = cpp_extension.CppExtension
    if with_cuda:
        sources += sorted(glob.glob("csrc/ops/cuda/*.cu"))
        nvcc = opt + ["--fmad=false", "--expt-relaxed-constexpr", "-DSSD_FAST_WITH_CUDA"]
        nvcc += (["-lineinfo"] if debug else []) + shlex.split(os.environ.get("NVCC_FLAGS", ""))
        cxx.append("-DSSD_FAST_WITH_CUDA")
        include_dirs += pip_cuda_include_dirs(cuda_home)
        compile_args["nvcc"] = nvcc
        Extension = cpp_extension.CUDAExtension
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            # No GPU to ask: build for the architectures this torch was built for (torch's own
            # default then fails with an IndexError).
            archs = [a[3:] for a in torch.cuda.get_arch_list() if a.startswith("sm_")]
            archs = [f"{a[:-1]}.{a[-1]}" for a in archs]
            os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs[:-1] + [archs[-1] + "+PTX"])

    _log(f"torch {torch.__version__}, CUDA kernels: {'yes' if with_cuda else 'no'} ({why})")
    if with_cuda:
        _log(f"CUDA_HOME={cuda_home}")
        _log(f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(torch default)')}")
        _log(f"nvcc flags: {' '.join(compile_args['nvcc'])}")
    _log(f"cxx flags: {' '.join(cxx)}")
    _log(f"MAX_JOBS={os.environ.get('MAX_JOBS', '(ninja default)')}, DEBUG={int(debug)}")
    _log(f"include dirs: {include_dirs}")
    _log(f"sources: {' '.join(sources)}")
    ext = Extension("ssd_fast._C", sources, include_dirs=include_dirs,
                    extra_compile_args=compile_args, extra_link_args=["-fopenmp"],
                    py_limited_api=False)

    emu = os.environ.get("SSD_FAST_EMU", "")
    if emu in ("", "0"):
        return [ext], cpp_extension.BuildExtension
    emu_ext = runpy.run_path("csrc/emu/build.py")["emu_extension"](emu, defines)
    # asan: an add-on to an existing build of ssd_fast._C
    return ([emu_ext] if emu == "asan" else [ext, emu_ext]), cpp_extension.BuildExtension


exts, build_ext = extensions()
setup(ext_modules=exts, cmdclass={"build_ext": build_ext.with_options(use_ninja=True)})

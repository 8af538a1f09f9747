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
  SSD_FAST_EMU=1 / asan   also build the test-only module ssd_fast._C_emu (csrc/ops/cuda/*.cu
                          compiled by the host compiler against the emulated CUDA device of
                          csrc/emu/, instrumented for its race and bounds checks), or build
                          only ssd_fast._C_emu_asan (the same under AddressSanitizer, beside an
                          existing build). Never part of ssd_fast._C.
"""
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig

from setuptools import setup


def _log(msg):
    print(f"[ssd_fast setup] {msg}", flush=True)


def _nvcc_toolkit_root(nvcc):
    """The toolkit root as nvcc itself reports it (nvcc on PATH may be a wrapper script)."""
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "x.cu"], capture_output=True, text=True,
                             timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^#\$ TOP=(.+)$", out, re.M)
    return os.path.realpath(m.group(1).strip()) if m else None


def find_cuda_home():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    return _nvcc_toolkit_root(nvcc) if nvcc else None


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


# The kernels' __launch_bounds__, which the emulated device checks launches against: read from
# the source (a GNU attribute cannot carry them to the emulator through a template instance).
LAUNCH_BOUNDS = re.compile(r"__launch_bounds__\s*\(\s*([^()]+?)\s*\)\s*(\w+)\s*\(")


def write_if_changed(path, text):
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


# What runtime.o is compiled from: the file and every project header it includes (held equal to
# its #include lines by tests/test_build.py).
EMU_RUNTIME_SOURCES = ("csrc/emu/runtime.cpp", "csrc/emu/emu.h")


def compile_emu_runtime(torch, flags, out_dir):
    """csrc/emu/runtime.cpp as an object of its own: it implements the functions that the
    instrumentation of the kernels calls, so it must not be instrumented itself (ninja compiles
    every source of an extension with the same flags)."""
    obj = os.path.join(out_dir, "runtime.o")
    cmd = [os.environ.get("CXX", "c++"), "-std=c++20", "-fPIC", *flags,
           f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}", "-Icsrc",
           "-c", "csrc/emu/runtime.cpp", "-o", obj]
    stamp = obj + ".cmd"
    newest = max(os.path.getmtime(p) for p in EMU_RUNTIME_SOURCES)
    if (not os.path.exists(obj) or os.path.getmtime(obj) < newest or not os.path.exists(stamp)
            or open(stamp).read() != " ".join(cmd)):
        _log(" ".join(cmd))
        subprocess.run(cmd, check=True)
        write_if_changed(stamp, " ".join(cmd))
    return obj


def emu_extension(torch, cpp_extension, cxx):
    """ssd_fast._C_emu (SSD_FAST_EMU=1) or ._C_emu_asan (=asan), else None."""
    flavor = os.environ.get("SSD_FAST_EMU", "")
    if flavor in ("", "0"):
        return None
    if flavor not in ("1", "asan"):
        sys.exit(f"[ssd_fast setup] SSD_FAST_EMU must be 1 or asan, got {flavor!r}")
    module = "_C_emu" if flavor == "1" else "_C_emu_asan"
    # One generated translation unit per source, so that the two flavours' objects never mix:
    # the emulator itself, and each .cu file followed by the registration of its launch bounds
    # (its kernels live in ssd_fast's anonymous namespace, where the bounds' constants are).
    gen = os.path.join("build", "emu", module)
    os.makedirs(gen, exist_ok=True)
    sources = []
    for src in ["csrc/emu/device.cpp"] + sorted(glob.glob("csrc/ops/cuda/*.cu")) + \
            sorted(glob.glob("csrc/emu/*.cu")):
        rel = os.path.relpath(src, "csrc")
        text = f"// Generated by setup.py for ssd_fast.{module}: {src} for the emulated device.\n" \
               f'#include "{rel}"\n'
        bounds = LAUNCH_BOUNDS.findall(open(src).read())
        if src.endswith(".cu") and bounds:
            calls = "".join(f'  ::ssd_emu::register_launch_bounds("{name}", {value});\n'
                            for value, name in bounds)
            text += ("namespace ssd_fast {\nnamespace {\nconst bool ssd_emu_launch_bounds = [] {\n"
                     f"{calls}  return true;\n}}();\n}}  // namespace\n}}  // namespace ssd_fast\n")
        out = os.path.join(gen, os.path.basename(src).replace(".", "_") + ".cpp")
        write_if_changed(out, text)
        sources.append(out)
    flags = ["-O2", "-g0", "-ffp-contract=off", "-fno-trapping-math", "-DSSD_FAST_EMU",
             f"-DSSD_EMU_MODULE={module}"] + [f for f in cxx if f.startswith("-DSSD_FAST_TORCH")]
    runtime_flags = ["-O2", "-g0"]
    link = []
    if flavor == "1":
        # ThreadSanitizer's instrumentation without its runtime: csrc/emu/runtime.cpp implements
        # the __tsan_* functions the compiler calls (shared-memory races, global writes).
        # No loop turned into a memset/memcpy call, which the hooks would not see.
        flags += ["-fsanitize=thread", "-fno-tree-loop-distribute-patterns"]
        runtime_flags.append("-DSSD_EMU_TRACKED_BUILD=1")
    else:
        asan = ["-fsanitize=address", "-fno-omit-frame-pointer"]
        flags += asan
        runtime_flags += asan
        link.append("-fsanitize=address")
    _log(f"emulated CUDA device: ssd_fast.{module} ({' '.join(flags)})")
    runtime = compile_emu_runtime(torch, runtime_flags, gen)
    return cpp_extension.CppExtension(
        f"ssd_fast.{module}", sources, include_dirs=[os.path.abspath("csrc")],
        extra_compile_args={"cxx": flags}, extra_objects=[runtime], extra_link_args=link,
        py_limited_api=False)


def make_extension():
    cuda_home = find_cuda_home()
    if cuda_home:
        # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
        os.environ["CUDA_HOME"] = cuda_home
    import torch
    from torch.utils import cpp_extension

    with_cuda, why = want_cuda(torch, cuda_home)
    debug = os.environ.get("DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/ops/cpu/**/*.cpp", recursive=True))
    # Contraction into FMA is off so the CPU and CUDA kernels round every IoU identically.
    # The C++ standard is left to torch.utils.cpp_extension (torch >= 2.10 needs C++20).
    # -fno-trapping-math lets gcc vectorise the select-heavy IoU loop; results are unchanged.
    # -g0 undoes the -g of Python's CFLAGS: debug info nearly doubles the compile time of
    # torch's headers (a fresh CPU-only build: 70 -> 40 s on 2 cores).
    cxx = opt + ([] if debug else ["-g0"]) + ["-ffp-contract=off", "-fno-trapping-math", "-fopenmp",
                 f"-DSSD_FAST_TORCH_VERSION={torch.__version__}"]
    include_dirs = [os.path.abspath("csrc")]
    ext_kwargs = {}
    if with_cuda:
        sources += sorted(glob.glob("csrc/ops/cuda/*.cu"))
        nvcc = opt + ["--fmad=false", "--expt-relaxed-constexpr",
                      "-DSSD_FAST_WITH_CUDA"]
        if debug:
            nvcc += ["-lineinfo"]
        nvcc += shlex.split(os.environ.get("NVCC_FLAGS", ""))
        cxx.append("-DSSD_FAST_WITH_CUDA")
        include_dirs += pip_cuda_include_dirs(cuda_home)
        ext_kwargs["extra_compile_args"] = {"cxx": cxx, "nvcc": nvcc}
        Ext = cpp_extension.CUDAExtension
    else:
        ext_kwargs["extra_compile_args"] = {"cxx": cxx}
        Ext = cpp_extension.CppExtension

    if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # No GPU to ask: build for the architectures this torch was built for (torch's own
        # default then fails with an IndexError).
        archs = [a[3:] for a in torch._C._cuda_getArchFlags().split() if a.startswith("sm_")]
        archs = [f"{a[:-1]}.{a[-1]}" for a in archs]
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs[:-1] + [archs[-1] + "+PTX"])
    _log(f"torch {torch.__version__}, CUDA kernels: {'yes' if with_cuda else 'no'} ({why})")
    if with_cuda:
        _log(f"CUDA_HOME={cuda_home}")
        _log(f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(torch default)')}")
        _log(f"nvcc flags: {' '.join(ext_kwargs['extra_compile_args']['nvcc'])}")
    _log(f"cxx flags: {' '.join(cxx)}")
    _log(f"MAX_JOBS={os.environ.get('MAX_JOBS', '(ninja default)')}, DEBUG={int(debug)}")
    _log(f"include dirs: {include_dirs}")
    _log(f"sources: {' '.join(sources)}")
    ext = Ext("ssd_fast._C", sources, include_dirs=include_dirs, extra_link_args=["-fopenmp"],
              py_limited_api=False, **ext_kwargs)
    emu = emu_extension(torch, cpp_extension, cxx)
    if os.environ.get("SSD_FAST_EMU") == "asan":  # an add-on to a build of ssd_fast._C
        return [emu], cpp_extension.BuildExtension
    return [ext] + ([emu] if emu else []), cpp_extension.BuildExtension


exts, build_ext = make_extension()
setup(ext_modules=exts, cmdclass={"build_ext": build_ext.with_options(use_ninja=True)})

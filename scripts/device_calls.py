"""Which tests exercise each CUDA-only call of csrc/ops/cuda/device.cuh, the one part of the CUDA
code the emulated device can never run (its `#if defined(__CUDACC__)` branches: cub's calls,
cudaMemsetAsync, the dynamic shared-memory attribute, the <<<...>>> launch, the stream and the
guard), so that the first GPU run is known to cover them all.

    python3 scripts/device_calls.py [emu|cuda]

Computed, not written down: the CUDA calls are read from device.cuh's CUDA branches, each with
the dev:: function that holds it (and the dev:: functions that call that one); the launchers of
csrc/ops/cuda/*.cu that use those functions, with the kernels each launcher launches (its
witnesses: a launch of one that no other launcher launches means the launcher ran); then
every case of
scripts/gpu_sanitizer_cases.py is run on the device, and the kernels it launched are counted
(emu: the emulated device's launch counters; cuda: torch.profiler's kernel names). One line per
call: the call, its dev:: function, its launchers, the sanitizer cases that reach it (the
attribute is set once per process, by the first of its cases that runs). Exit status 1 if a
call is reached by no case (tests/test_gpu_suite.py runs this on "emu"; scripts/gpu_suite.sh
step 2 on "cuda", into its summary).
"""
import contextlib
import io
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "ops" / "cuda"

_DEF = re.compile(r"^(?:inline |constexpr )?[\w:][\w:<>,* ]*?\b(\w+)\s*\(", re.M)
_CALL = re.compile(r"(cub::\w+::\w+|\bcuda[A-Z]\w*(?=\s*\()|at::cuda::\w+|c10::cuda::\w+|"
                   r"C10_CUDA_KERNEL_LAUNCH_CHECK|<<<)")


def _branches(text):
    """(start, end) of every `#if defined(__CUDACC__)` branch (up to its #else or #endif)."""
    out = []
    for m in re.finditer(r"^#if defined\(__CUDACC__\)\n", text, re.M):
        end = re.compile(r"^#(?:else|elif|endif)\b", re.M).search(text, m.end())
        out.append((m.end(), end.start()))
    return out


def _definitions(text):
    """name -> body of every top-level function or alias of device.cuh (a body ends at '}' in
    column 0), and the position where each begins."""
    defs = {}
    for m in _DEF.finditer(text):
        name = m.group(1)
        if name in ("if", "defined", "for", "while", "return"):
            continue
        line_end = text.find("\n", m.end())
        one_line = text[m.start():line_end].rstrip().endswith("}")
        end = line_end if one_line else text.find("\n}", m.end())
        defs.setdefault(name, (m.start(), text[m.start():end if end >= 0 else len(text)]))
    for m in re.finditer(r"^using (\w+) = ", text, re.M):
        defs.setdefault(m.group(1), (m.start(), text[m.start():text.find("\n", m.start())]))
    return defs


def device_calls():
    """{CUDA call: set of dev:: names whose use reaches it} from device.cuh."""
    text = (CUDA_DIR / "device.cuh").read_text()
    defs = _definitions(text)
    starts = sorted((pos, name) for name, (pos, _) in defs.items())
    calls = {}
    for lo, hi in _branches(text):
        for m in _CALL.finditer(text, lo, hi):
            call = "kernel<<<...>>>" if m.group(1) == "<<<" else m.group(1)
            line_start = text.rfind("\n", 0, m.start()) + 1
            owner = [name for pos, name in starts if pos <= line_start]
            if not owner:
                continue
            calls.setdefault(call, set()).add(owner[-1])
    # the dev:: functions that call a holder reach its calls too
    for call, names in calls.items():
        grew = True
        while grew:
            grew = False
            for name, (_, body) in defs.items():
                if name not in names and any(re.search(rf"\b{n}\s*[<(]", body.split("{", 1)[-1])
                                             for n in names):
                    names.add(name)
                    grew = True
    return calls


def launchers():
    """[(launcher, dev:: names it uses, kernels it launches)] over csrc/ops/cuda/*.cu: each
    top-level function (signature at column 0, body up to '}' in column 0)."""
    out = []
    for cu in sorted(CUDA_DIR.glob("*.cu")):
        text = cu.read_text()
        for m in re.finditer(r"^(?!\s)(?:[\w:<>,*&]+ )+?(\w+)\((?:[^;{]|\n)*?\)\s*(?:const\s*)?\{", text, re.M):
            end = text.find("\n}", m.end())
            body = text[m.end():end]
            used = set(re.findall(r"\bdev::(\w+)", body))
            kernels = set(re.findall(r"dev::launch<\s*(\w+)", body))
            aliases = dict(re.findall(r"constexpr auto (\w+) =\s*(\w+)<", body))
            kernels = {aliases.get(k, k) for k in kernels}
            if used:
                out.append((f"{cu.name}:{m.group(1)}", used, kernels))
    return out


def kernels_per_case(device):
    """{sanitizer case: set of kernel names it launched} on `device`."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_sanitizer_cases

    seen = {}
    if device == "emu":
        sys.path.insert(0, str(ROOT / "tests"))
        from emu_device import emu

        before = [emu.kernels()]

        def done(name):
            after = emu.kernels()
            seen[name] = {k for k, n in after.items() if n > before[0].get(k, 0)}
            before[0] = after

        gpu_sanitizer_cases.run(device, on_case=done)
    else:  # a profiler per case: the CUDA kernels it recorded
        import torch
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        current = [profile(activities=[ProfilerActivity.CUDA])]
        current[0].__enter__()

        def done(name):
            torch.cuda.synchronize()
            prof = current[0]
            prof.__exit__(None, None, None)
            seen[name] = {e.name for e in prof.events() if e.device_type == DeviceType.CUDA}
            current[0] = profile(activities=[ProfilerActivity.CUDA])
            current[0].__enter__()

        gpu_sanitizer_cases.run(device, on_case=done)
        current[0].__exit__(None, None, None)
    return seen


def table(device):
    """[(call, dev names, launchers, cases)] for every CUDA-only call of device.cuh."""
    with contextlib.redirect_stdout(io.StringIO()):  # the cases' own "ok" lines
        cases = kernels_per_case(device)
    found = launchers()
    # a launcher's witnesses: the kernels only it launches, where it has any
    unique = []
    for fn, used, kernels in found:
        others = set().union(*[k for f, _, k in found if f != fn])
        unique.append((fn, used, (kernels - others) or kernels))
    rows = []
    for call, names in sorted(device_calls().items()):
        users = [(fn, kernels) for fn, used, kernels in unique if used & names and kernels]
        reached = sorted({case for case, launched in cases.items()
                          for _, kernels in users
                          if any(re.search(rf"\b{k}\b", n) for k in kernels for n in launched)})
        rows.append((call, sorted(names), [fn for fn, _ in users], reached))
    return rows


def main():
    device = sys.argv[1] if len(sys.argv) > 1 else "cuda"
    status = 0
    for call, names, users, reached in table(device):
        print(f"{call} (dev::{', dev::'.join(names)}) in {', '.join(users) or 'no launcher'}; "
              f"sanitizer cases: {', '.join(reached) if reached else 'NONE'}")
        status |= not reached
    return status


if __name__ == "__main__":
    sys.exit(main())

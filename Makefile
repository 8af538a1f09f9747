# make test / make demo / make bench work from a fresh clone: they create .venv, install the
# dependencies, build the extension (CUDA kernels too when a toolkit and a GPU are found;
# FORCE_CUDA=1 compiles them without a GPU), then run. make test and make bench-smoke also build
# the test-only emulated CUDA device (ssd_fast._C_emu: the CUDA kernels run on the CPU, device
# "emu" in the tests); make test-emu-asan runs the emulated tests again under AddressSanitizer.
SHELL    := /bin/bash
VENV     ?= .venv
PYTHON   ?= python3
PY       := $(VENV)/bin/python
TORCH    ?= torch==2.14.1 torchvision==0.29.1
DEPS     ?= numpy ninja pybind11 pycocotools tqdm pillow
TEST_DEPS ?= pytest pytest-benchmark hypothesis onnx onnxscript onnxruntime
# every file under csrc/ (sources and headers of any suffix: .cuh too); tests/test_build.py holds
# this list equal to the tracked files there
SOURCES  := setup.py pyproject.toml $(shell find csrc -type f)
# one stamp per (FORCE_CUDA, SSD_FAST_EMU) value, so that switching either rebuilds the extension
BUILT    := $(VENV)/.built-cuda$(FORCE_CUDA)-emu$(SSD_FAST_EMU)
# the test targets build the emulated device unless told otherwise (SSD_FAST_EMU=0)
TEST_EMU := $(or $(SSD_FAST_EMU),1)
BENCH_OUT ?= benchmarks/results/$(shell date +%Y-%m-%d)-$(shell hostname).json

.PHONY: test test-emu-asan demo bench bench-smoke build clean sources

$(VENV)/.deps:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH) $(DEPS)
	touch $@

# the test tools: only what test and bench need (make demo does without them)
$(VENV)/.test-deps: $(VENV)/.deps
	$(PY) -m pip install $(TEST_DEPS)
	touch $@

# Rebuilt whenever a kernel source or the build script changes.
$(BUILT): $(VENV)/.deps $(SOURCES)
	SSD_FAST_EMU=$(SSD_FAST_EMU) $(PY) -m pip install -v --no-build-isolation -e . 2>&1 | grep -E '^ *(\[ssd_fast setup\]|\[[0-9]+/[0-9]+\]|Successfully|error|ERROR)' ; test $${PIPESTATUS[0]} -eq 0
	$(PY) -c "import ssd_fast; print('ssd_fast built; CUDA kernels:', ssd_fast.has_cuda_kernels())"
	rm -f $(VENV)/.built*
	touch $@

build: $(BUILT)

# the files whose change rebuilds the extension, one a line
sources:
	@printf '%s\n' $(SOURCES)

test: $(VENV)/.test-deps
	$(MAKE) --no-print-directory build SSD_FAST_EMU=$(TEST_EMU)
	$(PY) -m pytest tests -q -rfE

# The emulated tests once more, the emulator and the kernels built with AddressSanitizer
# (ssd_fast._C_emu_asan, built beside the test build): every device allocation and every block's
# shared memory is a heap block of its exact size, so an overrun is a report.
test-emu-asan: $(VENV)/.test-deps
	$(MAKE) --no-print-directory build SSD_FAST_EMU=$(TEST_EMU)
	SSD_FAST_EMU=asan $(PY) setup.py -q build_ext --inplace
	SSD_FAST_EMU=asan ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	  LD_PRELOAD="$$($${CXX:-c++} -print-file-name=libasan.so) $$($${CXX:-c++} -print-file-name=libstdc++.so)" \
	  $(PY) -m pytest tests -m emu -q -rfE -p no:cacheprovider

bench: build $(VENV)/.test-deps
	mkdir -p benchmarks/results
	$(PY) -m pytest benchmarks -q --benchmark-json=$(BENCH_OUT)
	$(PY) benchmarks/report.py $(BENCH_OUT)

bench-smoke: $(VENV)/.test-deps
	$(MAKE) --no-print-directory build SSD_FAST_EMU=$(TEST_EMU)
	$(PY) -m pytest benchmarks -q --benchmark-disable

demo: build
	$(VENV)/bin/ssd-fast demo

clean:
	rm -rf build ssd_fast/_C*.so $(VENV)/.built*

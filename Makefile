# make test / make demo / make bench work from a fresh clone: they create .venv, install the
# dependencies, build the extension (CUDA kernels too when a toolkit and a GPU are found;
# FORCE_CUDA=1 compiles them without a GPU), then run.
SHELL    := /bin/bash
VENV     ?= .venv
PYTHON   ?= python3
PY       := $(VENV)/bin/python
TORCH    ?= torch==2.14.1 torchvision==0.29.1
DEPS     ?= numpy ninja pybind11 pycocotools tqdm pillow
TEST_DEPS ?= pytest pytest-benchmark hypothesis
SOURCES  := setup.py pyproject.toml $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h')
# one stamp per FORCE_CUDA value, so that switching it rebuilds the extension
BUILT    := $(VENV)/.built-cuda$(FORCE_CUDA)
BENCH_OUT ?= benchmarks/results/$(shell date +%Y-%m-%d)-$(shell hostname).json

.PHONY: test demo bench bench-smoke build clean

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
	$(PY) -m pip install -v --no-build-isolation -e . 2>&1 | grep -E '^ *(\[ssd_fast setup\]|\[[0-9]+/[0-9]+\]|Successfully|error|ERROR)' ; test $${PIPESTATUS[0]} -eq 0
	$(PY) -c "import ssd_fast; print('ssd_fast built; CUDA kernels:', ssd_fast.has_cuda_kernels())"
	rm -f $(VENV)/.built*
	touch $@

build: $(BUILT)

test: build $(VENV)/.test-deps
	$(PY) -m pytest tests -q -rfE

bench: build $(VENV)/.test-deps
	mkdir -p benchmarks/results
	$(PY) -m pytest benchmarks -q --benchmark-json=$(BENCH_OUT)
	$(PY) benchmarks/report.py $(BENCH_OUT)

bench-smoke: build $(VENV)/.test-deps
	$(PY) -m pytest benchmarks -q --benchmark-disable

demo: build
	$(VENV)/bin/ssd-fast demo

clean:
	rm -rf build ssd_fast/_C*.so $(VENV)/.built*

# Every target does its own set-up: a fresh clone needs nothing but Python 3.11 and Java 17+.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# Keep img2dataset's imports (albumentations, wandb) off the network.
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE := disabled
export WANDB_DISABLED := true
export PYSPARK_PYTHON := $(abspath $(PY))
export PYTHONHASHSEED := 0

.PHONY: setup system-deps test test-fast demo bench gpu-wheels lint clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	@command -v java >/dev/null || { echo "error: java not found (Java 17+ is required by Spark 4)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	# torch first, pinned to the build this machine has on disk (CPU here, CUDA on a GPU box).
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Debian packages some tests use: WordNet's database (query list), Chromium (report screenshot).
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  [ -d /usr/share/wordnet ] || missing="$$missing wordnet-base"; \
	  command -v chromium >/dev/null || missing="$$missing chromium";\
	  command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "note: not root or no apt-get; tests needing wordnet-base/chromium will skip"; fi

test: setup system-deps
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(VENV)/bin/wit demo --output-dir demo_out

bench: setup
	$(PIP) install -q -c constraints.txt -e '.[bench]' || echo "note: bench extras not installable; peers that need them are skipped"
	WIT_REAL_DATA=$(abspath ../shared/data) $(PY) -m bench

# Wheels of our dependencies that a GPU machine's Python (3.12, torch already there) lacks, pinned as
# constraints.txt pins them, for bench/gpu.sh on a machine with no network.
GPU_WHEELS := open_clip_torch webdataset braceexpand ftfy wcwidth pydantic pydantic_core annotated-types typing-inspection
gpu-wheels: setup
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
	  --platform manylinux_2_17_x86_64 -d .whl $$(for w in $(GPU_WHEELS); do grep -i "^$$w==" constraints.txt; done)

lint: setup
	$(VENV)/bin/ruff check pipeline filters schemas jobs tests bench

clean:
	rm -rf $(VENV) demo_out wit_out .pytest_cache

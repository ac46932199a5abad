# Two commands do everything on a fresh machine with Rust and Python 3:
#   make demo   run the main job on the embedded synthetic world
#   make test   formatting, lints and the test suite
#
# libtorch comes from the pinned PyTorch wheel (tch 0.26 expects exactly 2.13.0),
# installed into a local virtualenv on first use. The build reads it through
# LIBTORCH_USE_PYTORCH and build.rs embeds its library path (rpath) into every
# binary, so nothing has to be exported by hand.

TORCH_VERSION := 2.13.0
VENV := $(CURDIR)/.venv
PYTHON ?= python3

# libjpeg-turbo's x86 SIMD kernels (the ones Pillow's wheels use) are assembled
# by nasm while mozjpeg-sys builds. Without nasm it builds the portable C code:
# the same pixels, JPEG decoding about 2x slower. `make nasm` puts Debian's
# nasm into .tools/ (no system install); every target that builds uses it.
TOOLS := $(CURDIR)/.tools
HAVE_NASM = $(shell { test -x $(TOOLS)/usr/bin/nasm || command -v nasm; } >/dev/null 2>&1 && echo 1)

export VIRTUAL_ENV := $(VENV)
export PATH := $(TOOLS)/usr/bin:$(VENV)/bin:$(PATH)
# Read by tests/preprocess.rs (makefile_builds_have_jpeg_simd).
export DICOFLOW_EXPECT_JPEG_SIMD = $(HAVE_NASM)
export LIBTORCH_USE_PYTORCH := 1

DEMO_ARGS ?=

.PHONY: all venv nasm demo test build check bench-data bench-eval meteor-data clean-venv env

all: build

# (Re)install when the venv is missing or holds another torch version (a later
# `pip install` of some other package can silently upgrade torch).
venv:
	@if ! $(VENV)/bin/python -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null; then \
		echo "==> installing torch==$(TORCH_VERSION) into $(VENV) (first run only)" >&2; \
		{ test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV); } && \
		$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION) >&2; \
	fi

# Python packages used only by reference scripts and the Python side of benchmarks.
$(VENV)/.dev-tools: | venv
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION) torchvision==0.28.0 pyarrow pillow==13.0.0
	@touch $@

# The reference readers the tests load dicoflow's output files with (tests/readers/):
# pyarrow (Parquet), safetensors (weights), pycocotools + pycocoevalcap (COCO JSON).
# torch is pinned in the same command so pip cannot change it.
$(VENV)/.readers: | venv
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION) numpy pyarrow safetensors pycocotools pycocoevalcap==1.2
	@touch $@

# Their messages go to stderr, so that `eval "$$(make -s env)"` reads only the
# export line even on the first run.
# Fetch nasm once (unless one is installed), then rebuild mozjpeg-sys so that a
# build made before, without nasm, does not keep the C-only decoder (its build
# script does not notice a new nasm by itself).
nasm: $(TOOLS)/.nasm

$(TOOLS)/.nasm:
	@if command -v nasm >/dev/null 2>&1; then \
		echo "==> using $$(command -v nasm)" >&2; \
	elif [ "$$(uname -m)" != x86_64 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "==> no nasm and no apt-get: libjpeg-turbo builds without SIMD (same pixels, slower); install nasm to fix" >&2; \
	else \
		echo "==> fetching nasm (Debian package) into $(TOOLS)" >&2; \
		rm -rf $(TOOLS)/deb && mkdir -p $(TOOLS)/deb; \
		if ( cd $(TOOLS)/deb && { apt-get download nasm 2>/dev/null || { apt-get update -qq && apt-get download nasm; }; } ) >&2 && \
			dpkg -x $(TOOLS)/deb/nasm_*.deb $(TOOLS); then \
			$(TOOLS)/usr/bin/nasm -v >&2; \
		else \
			echo "==> could not fetch nasm: libjpeg-turbo builds without SIMD (same pixels, slower); install nasm, then rm -rf $(TOOLS) and run make again" >&2; \
		fi; \
		rm -rf $(TOOLS)/deb; \
	fi
	@cargo clean --quiet -p mozjpeg-sys 2>/dev/null || true
	@mkdir -p $(TOOLS) && touch $@

# --workspace: also dicoflow-eval (crates/dicoflow-metrics, the caption metrics
# without libtorch).
build: venv nasm
	cargo build --workspace --bins

demo: venv nasm
	cargo run --bin dicoflow -- demo $(DEMO_ARGS)

# --workspace: the crate, crates/dicoflow-kernels (its pixel loops) and
# crates/dicoflow-metrics (the caption metrics and dicoflow-eval).
check: venv nasm
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# --workspace: also the member crates' tests (dicoflow-eval's own test runs
# the binary).
test: check $(VENV)/.readers meteor-data
	cargo test --workspace

bench-data: $(VENV)/.dev-tools nasm
	cargo run --example bench_data -- --python $(VENV)/bin/python

# The benchmark's toolkit side (pycocoevalcap with Java's METEOR, latest release) in
# its own venv, apart from the tests' pinned pycocoevalcap==1.2 reference readers.
$(CURDIR)/.pyenv/.ready:
	$(PYTHON) -m venv $(CURDIR)/.pyenv
	$(CURDIR)/.pyenv/bin/pip install --quiet --disable-pip-version-check pycocoevalcap
	@touch $@

# METEOR 1.5's English data, as pycocoevalcap ships it: the paraphrase table
# (data/paraphrase-en.gz in the wheel) and, from inside meteor-1.5.jar, the
# function words, WordNet synsets and exceptions, and the non-breaking prefixes.
# Taken from the pinned wheel on PyPI (no Java needed); read by
# `dicoflow eval --metrics meteor` and the METEOR parity test.
METEOR_DATA := $(CURDIR)/.meteor
PYCOCOEVALCAP_VERSION := 1.2

meteor-data: $(METEOR_DATA)/.ready

$(METEOR_DATA)/.ready: | venv
	rm -rf $(METEOR_DATA)/wheel
	$(VENV)/bin/pip download --quiet --disable-pip-version-check --no-deps \
		pycocoevalcap==$(PYCOCOEVALCAP_VERSION) -d $(METEOR_DATA)/wheel
	$(VENV)/bin/python examples/bench_eval/extract_meteor_data.py $(METEOR_DATA)/wheel/pycocoevalcap-*.whl $(METEOR_DATA)
	rm -rf $(METEOR_DATA)/wheel
	@touch $@

# Times dicoflow-eval (no libtorch; `cargo build --release -p dicoflow-metrics`).
bench-eval: $(CURDIR)/.pyenv/.ready meteor-data
	bash examples/bench_eval/run.sh 3
	METRICS=meteor bash examples/bench_eval/run.sh 1
	METRICS=bleu,meteor,rouge,cider bash examples/bench_eval/run.sh 3
	VARIED=1 METRICS=bleu,meteor,rouge,cider bash examples/bench_eval/run.sh 3

# Print the environment the Makefile uses, to run cargo by hand: eval "$$(make env)"
env: venv nasm
	@echo "export VIRTUAL_ENV=$(VENV) PATH=$(TOOLS)/usr/bin:$(VENV)/bin:\$$PATH LIBTORCH_USE_PYTORCH=1"

clean-venv:
	rm -rf $(VENV)

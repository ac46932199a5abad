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

export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1

DEMO_ARGS ?=

.PHONY: all venv demo test build check bench-data bench-eval clean-venv env

all: build

# (Re)install when the venv is missing or holds another torch version (a later
# `pip install` of some other package can silently upgrade torch).
venv:
	@if ! $(VENV)/bin/python -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null; then \
		echo "==> installing torch==$(TORCH_VERSION) into $(VENV) (first run only)"; \
		{ test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV); } && \
		$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION); \
	fi

# Python packages used only by reference scripts and the Python side of benchmarks.
$(VENV)/.dev-tools: | venv
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION) torchvision==0.28.0 pyarrow pillow==13.0.0
	@touch $@

build: venv
	cargo build --bins

demo: venv
	cargo run --bin dicoflow -- demo $(DEMO_ARGS)

check: venv
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

test: check
	cargo test

bench-data: $(VENV)/.dev-tools
	cargo run --example bench_data -- --python $(VENV)/bin/python

# pycocoevalcap (needs Java) lives in its own venv: it must not touch the pinned torch.
$(CURDIR)/.pyenv/.ready:
	$(PYTHON) -m venv $(CURDIR)/.pyenv
	$(CURDIR)/.pyenv/bin/pip install --quiet --disable-pip-version-check pycocoevalcap
	@touch $@

bench-eval: venv $(CURDIR)/.pyenv/.ready
	bash examples/bench_eval/run.sh 3

# Print the environment the Makefile uses, to run cargo by hand: eval "$$(make env)"
env: venv
	@echo "export VIRTUAL_ENV=$(VENV) PATH=$(VENV)/bin:\$$PATH LIBTORCH_USE_PYTORCH=1"

clean-venv:
	rm -rf $(VENV)

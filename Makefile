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

demo: $(STAMP)
	mkdir -p $(DEMO_OUT)
	$(BIN)/dnnsplit profile torchvision:resnet18 --threads 2 --output $(DEMO_OUT)/profile.json --plot $(DEMO_OUT)/profile.png
	$(BIN)/dnnsplit plan $(DEMO_OUT)/profile.json --tiers mobile,edge,cloud --network 4g \
		--output $(DEMO_OUT)/plan.yaml --sweep-bandwidth 0.1:100:20 --plot $(DEMO_OUT)/sweep.png
	@echo "demo: wrote $(DEMO_OUT)/profile.json, profile.png, plan.yaml and sweep.png"

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

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache

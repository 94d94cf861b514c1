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
	$(BIN)/dnnsplit split torchvision:resnet18 --plan $(DEMO_OUT)/plan.yaml --output $(DEMO_OUT)/segments --force
	$(BIN)/python -c "import numpy as np; np.save('$(DEMO_OUT)/frame.npy', np.random.default_rng(0).standard_normal((3, 224, 224)).astype('float32'))"
	$(BIN)/dnnsplit run $(DEMO_OUT)/segments --input $(DEMO_OUT)/frame.npy
	@echo "demo: wrote $(DEMO_OUT)/profile.json, profile.png, plan.yaml, sweep.png and segments/ (manifest.yaml)"

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

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache

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
	@echo "demo: profile written to $(DEMO_OUT)/profile.json and $(DEMO_OUT)/profile.png"

test: $(STAMP)
	$(BIN)/ruff check dnnsplit tests benchmarks
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check dnnsplit tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/profile_wall_time.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache

# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: demo test test-slow lint bench clean web

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# The browser client's runtime: onnxruntime-web from the npm registry, pinned by web/package-lock.json, copied
# into the package (served by `dnnsplit serve --web`, loaded by `profile --runtime browser`): no CDN at run time.
# wasm backend: ort.wasm + the plain SIMD/threads build; WebGPU: ort.webgpu + its asyncify build.
VENDOR := dnnsplit/runtime/web/static/vendor
ORT_DIST := web/node_modules/onnxruntime-web/dist
ORT_FILES := ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm \
	ort.webgpu.min.mjs ort-wasm-simd-threaded.asyncify.mjs ort-wasm-simd-threaded.asyncify.wasm
web: $(VENDOR)/.installed
$(VENDOR)/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --ignore-scripts
	mkdir -p $(VENDOR)
	cp $(addprefix $(ORT_DIST)/,$(ORT_FILES)) $(VENDOR)/
	cp web/node_modules/onnxruntime-web/package.json $(VENDOR)/onnxruntime-web.package.json
	touch $@

# The demo: resnet18 for the 10 digits at 32x32, trained on the digits bundled with scikit-learn, then
# profile -> plan (mobile-web / edge / cloud over 4G) -> split -> run, and an early-exit branch.
DEMO_MODEL := $(DEMO_OUT)/resnet18-digits.pt
demo: $(STAMP) web
	mkdir -p $(DEMO_OUT)
	test -f $(DEMO_MODEL) || $(BIN)/dnnsplit train torchvision:resnet18 --num-classes 10 --input-shape 1x3x32x32 \
		--data digits --output $(DEMO_MODEL)
	$(BIN)/dnnsplit profile $(DEMO_MODEL) --threads 2 --output $(DEMO_OUT)/profile.json --plot $(DEMO_OUT)/profile.png
	$(BIN)/dnnsplit plan $(DEMO_OUT)/profile.json --tiers mobile,edge,cloud --network 4g \
		--output $(DEMO_OUT)/plan.yaml --sweep-bandwidth 0.1:100:20 --plot $(DEMO_OUT)/sweep.png
	$(BIN)/dnnsplit split $(DEMO_MODEL) --plan $(DEMO_OUT)/plan.yaml --output $(DEMO_OUT)/segments --force
	$(BIN)/python -c "from dnnsplit.training.data import load_data; import numpy as np; \
		x, y = load_data('digits', (1, 3, 32, 32), augment=False).test[0]; np.save('$(DEMO_OUT)/digit.npy', x.numpy()); \
		print('demo input: a test digit labelled', y)"
	$(BIN)/dnnsplit run $(DEMO_OUT)/segments --input $(DEMO_OUT)/digit.npy
	test -f $(DEMO_OUT)/branch/branch.yaml || $(BIN)/dnnsplit branch $(DEMO_MODEL) --data digits \
		--output $(DEMO_OUT)/branch --plot $(DEMO_OUT)/exits.png
	$(BIN)/dnnsplit plan $(DEMO_OUT)/profile.json --network 4g --branch $(DEMO_OUT)/branch
	@echo "demo: wrote $(DEMO_OUT)/: resnet18-digits.pt, profile.json/png, plan.yaml, sweep.png, segments/, branch/, exits.png"

test: $(STAMP) web
	$(BIN)/ruff check dnnsplit tests benchmarks
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check dnnsplit tests benchmarks

bench: $(STAMP) web
	$(BIN)/python benchmarks/profile_wall_time.py
	$(BIN)/python benchmarks/plan_solver.py
	$(BIN)/python benchmarks/split_chain.py
	$(BIN)/python benchmarks/branch_exit.py
	$(BIN)/python benchmarks/prune_variants.py
	$(BIN)/python benchmarks/browser_bench.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache web/node_modules $(VENDOR) test-artifacts

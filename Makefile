# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: demo test test-slow lint bench clean web wasm

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

# The branch's bit kernels (XNOR/popcount, WebAssembly SIMD): built from web/kernels/bitkernels.c with
# Debian's clang and lld (apt-get install -y clang lld), no libc. The .wasm is committed in the package
# with web/kernels/bitkernels.json beside the source (the source's and the module's sha256, the flags,
# the compiler), so CI and installs need no clang; tests check the committed module matches the source.
WASM_SRC := web/kernels/bitkernels.c
WASM_OUT := dnnsplit/runtime/web/static/bitkernels.wasm
WASM_CC ?= clang
WASM_FLAGS := --target=wasm32 -O3 -msimd128 -ffreestanding -nostdlib -Wall -Wextra -Werror \
	-Wl,--no-entry -Wl,--export=__heap_base -Wl,--strip-all
wasm:
	$(WASM_CC) $(WASM_FLAGS) -o $(WASM_OUT) $(WASM_SRC)
	python3 web/kernels/stamp.py $(WASM_SRC) $(WASM_OUT) "$$($(WASM_CC) --version | head -1)" $(WASM_FLAGS)

# The demo: `dnnsplit pipeline` on the built-in config (the file `dnnsplit init` writes): resnet18 for the
# 10 digits at 32x32 trained on the digits bundled with scikit-learn, profiled, branched, pruned, planned
# for mobile-web / edge / cloud over 4G and split, with a report. A second run skips the unchanged stages.
DEMO_CONFIG := dnnsplit/pipeline/demo.yaml
demo: $(STAMP) web
	$(BIN)/dnnsplit pipeline $(DEMO_CONFIG) --output $(DEMO_OUT)
	@echo "demo: the report is $(DEMO_OUT)/report.md (plots beside it; segments in $(DEMO_OUT)/segments/)"

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
	$(BIN)/python benchmarks/branch_kernels.py
	test -f $(DEMO_OUT)/branch/branch.yaml || $(MAKE) demo
	$(BIN)/python benchmarks/branch_plans.py --run $(DEMO_OUT)
	$(BIN)/python benchmarks/prune_variants.py
	$(BIN)/python benchmarks/browser_bench.py
	$(BIN)/python benchmarks/elastic.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache web/node_modules $(VENDOR) test-artifacts

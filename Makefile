# `make run` and `make test` each create .venv when missing, install the project, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-slow lint typecheck format bench clean

$(STAMP): pyproject.toml constraints-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-dev.txt -e ".[all]"
	touch $(STAMP)

run: $(STAMP)
	rm -rf out/local_onnx
	$(BIN)/trkx run configs/local_onnx.toml --simulate 5 --output out/local_onnx

TYPECHECK := $(BIN)/mypy inference_iface backends tracking_algs

# The tests run in TEST_WORKERS processes (pytest-xdist), each taking whole files, so that a module's fixtures
# (servers, simulated events) are made once; TEST_WORKERS=0 runs them in this process.  mypy runs beside them, its
# report after theirs; either failing fails the target.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	@report=$$(mktemp); $(TYPECHECK) > $$report 2>&1 & typecheck=$$!; \
	echo "$(PYTEST)"; $(PYTEST); tests=$$?; \
	wait $$typecheck; typed=$$?; echo "$(TYPECHECK)"; cat $$report; rm -f $$report; \
	test $$tests -eq 0 && test $$typed -eq 0

test-slow: $(STAMP)
	$(PYTEST) -m slow

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

typecheck: $(STAMP)
	$(TYPECHECK)

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/trkx bench all

clean:
	rm -rf $(VENV) out .pytest_cache

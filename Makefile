# Shortcuts; the test command itself is ./scripts/test.sh.
VENV := .venv/py3.11

.PHONY: test lint bench proto

test:
	./scripts/test.sh

lint: $(VENV)/bin/ruff
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# Reinstalls first, so the benchmarks measure the current source.
bench: $(VENV)/bin/ruff
	$(VENV)/bin/python -m pip install -q .
	@for f in benchmarks/*.py; do echo "=== $$f"; $(VENV)/bin/python $$f || exit 1; done

# Needs grpcio-tools==1.62.3 in PYTHON (see the script); .ci/run sets up .venv/protogen.
PYTHON ?= $(if $(wildcard .venv/protogen/bin/python),.venv/protogen/bin/python,python3)
proto:
	PYTHON=$(PYTHON) scripts/gen_proto.sh

$(VENV)/bin/ruff:
	SPANPROF_PYTHONS=3.11 SPANPROF_SETUP_ONLY=1 ./scripts/test.sh

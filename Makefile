# Shortcuts; the test command itself is ./scripts/test.sh.
VENV := .venv/py3.11

.PHONY: test lint bench proto viewer check-viewer

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

# Rebuilds the committed viewer bundle (src/spanprof/viewer/static/) from viewer/.
viewer:
	scripts/build_viewer.sh

# Fails if the committed bundle is not what viewer/ builds to.
check-viewer:
	scripts/check_viewer_bundle.sh

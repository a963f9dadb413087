# Pleura: the two set-up commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export PLEURA_DATA_DIR ?= $(CURDIR)/var
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/pleura
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: venv frontend demo serve test check-services bench train-cxr train-ct lint

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	touch $@

venv: $(VENV)/.installed

frontend:
	@if [ -f frontend/package.json ]; then cd frontend && npm ci --no-audit --no-fund && npm run build; fi

## Embedded default: SQLite, in-process tasks, local files under $(PLEURA_DATA_DIR).
demo: venv frontend
	$(PY) manage.py migrate --noinput
	$(PY) manage.py setup_demo
	$(PY) manage.py runserver $(HOST):$(PORT)

serve: venv
	$(PY) manage.py runserver $(HOST):$(PORT)

check-services: venv
	$(PY) scripts/check_services.py --database-url $(TEST_DATABASE_URL) --redis-url $(TEST_REDIS_URL)

## Whole test suite against PostgreSQL and Redis on their standard local ports.
test: venv frontend check-services
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
		$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) scripts/bench.py --out bench/results

train-cxr: venv
	$(PY) -m ml train --config ml/configs/cxr_default.yaml

train-ct: venv
	$(PY) -m ml train --config ml/configs/ct_default.yaml

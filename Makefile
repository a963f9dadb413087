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

## torch==2.13.0 must be the CPU build: pip takes a local CPU wheel when its configuration offers
## one (find-links), else the PyTorch CPU index (PyPI's torch is the multi-GB CUDA build). Then the
## project itself, editable and without dependencies: backend/ and ml/ importable from anywhere.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIN := $(shell grep -E '^torch==' requirements.txt)

$(VENV)/.installed: requirements.txt requirements-nnunet.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if $(PIP) install --dry-run --no-index --no-deps "$(TORCH_PIN)" 2>/dev/null | grep -q '+cpu'; then \
		echo "$(TORCH_PIN): local CPU wheel"; $(PIP) install -q -r requirements.txt; \
	else \
		echo "$(TORCH_PIN): CPU wheel index $(TORCH_CPU_INDEX)"; \
		$(PIP) install -q --extra-index-url $(TORCH_CPU_INDEX) -r requirements.txt; \
	fi
	$(PIP) install -q --no-deps -r requirements-nnunet.txt
	$(PIP) install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

frontend:
	@if [ -f frontend/package.json ]; then cd frontend && npm ci --no-audit --no-fund && npm run build; fi

## Embedded default: SQLite, in-process tasks, local files under $(PLEURA_DATA_DIR), DEBUG on with
## the development key (the settings fail closed without DEBUG=1). Leaves one process running in
## the foreground: Django's development server on $(HOST):$(PORT) (Ctrl-C stops it).
demo: venv frontend
	DEBUG=1 $(PY) manage.py migrate --noinput
	DEBUG=1 $(PY) manage.py setup_demo
	DEBUG=1 $(PY) manage.py runserver $(HOST):$(PORT)

serve: venv
	DEBUG=1 $(PY) manage.py runserver $(HOST):$(PORT)

check-services: venv
	$(PY) scripts/check_services.py --database-url $(TEST_DATABASE_URL) --redis-url $(TEST_REDIS_URL)

## Whole test suite against PostgreSQL and Redis on their standard local ports.
test: venv frontend check-services
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
		$(PY) -m pytest $(PYTEST_ARGS)

## Benchmarks run the production settings (DEBUG off) with a throw-away key, over plain HTTP.
bench: venv
	SECRET_KEY=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))') \
		SESSION_COOKIE_SECURE=0 CSRF_COOKIE_SECURE=0 $(PY) scripts/bench.py --out bench/results

## Retrain a shipped model from ../shared/data, as its card says, into $(CANDIDATES): weights,
## card with its evaluation (the hand-written history of the shipped cards, e.g. the CT targets
## and the variants not shipped, stays in git), evaluation folders under runs/. Compare with the
## shipped one, then ship with `make train-cxr CANDIDATES=ml/weights` (git shows what changed).
## Interrupted runs resume.
CANDIDATES ?= runs/candidates
CXR_MANIFEST ?= ../shared/data/cxr/manifest.csv
CT_MANIFEST ?= ../shared/data/ct/manifest.csv
CXR_CANDIDATE := $(CANDIDATES)/cxr_resunet_256.pt
CXR_PACKAGE := $(PY) -m ml.cxr.packaging runs/cxr_stage2/best.pt --name cxr_resunet_256 --alias cxr \
	--weights-dir $(CANDIDATES) --description "Default chest X-ray lung model: residual U-Net (MONAI UNet, 2 residual units), 256x256, right/left lungs"

train-cxr: venv
	$(PY) -m ml train --config ml/configs/cxr_default.yaml
	$(PY) -m ml train --config ml/configs/cxr_stage2.yaml
	$(CXR_PACKAGE)
	$(PY) -m ml evaluate --model $(CXR_CANDIDATE) --manifest $(CXR_MANIFEST) --split val --out runs/train_cxr/eval_val
	$(PY) -m ml evaluate --model $(CXR_CANDIDATE) --manifest $(CXR_MANIFEST) --split test --out runs/train_cxr/eval_test
	$(CXR_PACKAGE) --metrics val=runs/train_cxr/eval_val test=runs/train_cxr/eval_test

## The shipped CT model is the fold without nsclc_lung1_002 (so that one NSCLC case stays unseen);
## nsclc_lung1_001 is scored by the second fold, shipped beside it.
train-ct: venv
	$(PY) -m ml train --config ml/configs/ct_loco_nsclc002.yaml
	$(PY) -m ml train --config ml/configs/ct_loco_nsclc001.yaml
	$(PY) -m ml.ct.packaging --checkpoint runs/ct_loco_nsclc002/best.pt --name ct_unet192 --alias ct --weights-dir $(CANDIDATES)
	$(PY) -m ml.ct.packaging --checkpoint runs/ct_loco_nsclc001/best.pt --name ct_unet192_loco_nsclc001 \
		--loco-of ct_unet192 --weights-dir $(CANDIDATES)
	$(PY) -m ml evaluate --model $(CANDIDATES)/ct_unet192.pt --manifest $(CT_MANIFEST) --split all --out runs/train_ct/eval
	$(PY) -m ml.ct.packaging --attach-metrics runs/train_ct/eval --name $(CANDIDATES)/ct_unet192.pt
	$(PY) -m ml evaluate --model classical --manifest $(CT_MANIFEST) --split all --out runs/train_ct/eval_classical
	$(PY) -m ml.ct.report --model runs/train_ct/eval --baseline runs/train_ct/eval_classical

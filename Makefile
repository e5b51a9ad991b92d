# The two commands of the README: `make demo` (the main job) and `make test`.
# Each creates .venv from requirements/lock.txt when it is missing or out of date.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUTPUT ?= demo-output

.PHONY: install demo test lock clean bench-torchgeo-env

install: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check \
		--constraint requirements/lock.txt --editable '.[test]'
	@touch $@

demo: $(STAMP)
	$(BIN)/odeon demo --output $(DEMO_OUTPUT)

test: $(STAMP)
	$(BIN)/ruff check odeon_job tests bench
	$(BIN)/python -m pytest

# Regenerate the lock from the current environment (after changing pyproject.toml ranges).
lock: $(STAMP)
	{ echo "# Exact versions for Linux x86_64, CPython 3.11 (this project's CI machines)."; \
	  echo "# Installed with: pip install --constraint requirements/lock.txt --editable '.[test]'  (make install)"; \
	  echo "# Regenerate with 'make lock' after changing pyproject.toml; check that s3fs/aiobotocore/boto3/botocore stay in step."; \
	  $(BIN)/pip freeze --exclude-editable | grep -vi '^odeon-job=='; } > requirements/lock.txt

# TorchGeo's own environment, for bench/peer_torchgeo.py only.
bench-torchgeo-env: .venv-torchgeo/.installed

.venv-torchgeo/.installed: requirements/bench-torchgeo.txt
	@test -x .venv-torchgeo/bin/python || $(PYTHON) -m venv .venv-torchgeo
	.venv-torchgeo/bin/pip install --quiet --disable-pip-version-check --requirement requirements/bench-torchgeo.txt
	@touch $@

clean:
	rm -rf $(VENV) .venv-torchgeo $(DEMO_OUTPUT) .pytest_cache

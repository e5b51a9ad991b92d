# odeon-job: `odeon train` in a container, for Kubernetes (helm/odeon-train) and `docker run --gpus all`.
#
# CUDA comes with torch's wheels (the nvidia-* packages); the host's driver is mounted by the NVIDIA
# container toolkit, so any Debian bookworm base works: the default, or a CUDA/cuDNN bookworm image in
# CI, or a local one where no registry can be reached (BASE_IMAGE=localhost/debian:bookworm).
#   docker build -t odeon-job .
#   docker run --gpus all --shm-size=8g -v "$PWD/config:/etc/odeon:ro" -v "$PWD/runs:/runs" odeon-job
#   docker run --read-only --tmpfs /tmp odeon-job demo --output /tmp/demo
# Installs are pinned by requirements/lock.txt. PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_FIND_LINKS / PIP_CERT
# (build arguments) point pip at a mirror or at wheels mounted into the build. Debian packages are
# pinned to the releases the lock needs (Python 3.11: bookworm), not to revisions security updates bump.
ARG BASE_IMAGE=debian:bookworm-slim

# --- build: a virtual environment with the package and its pinned dependencies ------------------------
FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CERT
RUN apt-get update \
 && apt-get install -y --no-install-recommends "python3=3.11.*" "python3-venv=3.11.*" "ca-certificates=2023*" \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/odeon
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes, not at every code change.
COPY requirements/lock.txt requirements/lock.txt
COPY pyproject.toml README.md ./
RUN /opt/odeon/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))\
['project']['dependencies']))" > /tmp/runtime.txt \
 && /opt/odeon/bin/pip install --constraint requirements/lock.txt --requirement /tmp/runtime.txt
COPY odeon_job odeon_job
RUN /opt/odeon/bin/pip install --no-deps --constraint requirements/lock.txt . \
 && /opt/odeon/bin/odeon --help > /dev/null

# --- runtime: the environment, Python, tini, a numeric non-root user -----------------------------------
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends "python3=3.11.*" "tini=0.19.*" "ca-certificates=2023*" \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin odeon \
 && mkdir -p /etc/odeon
COPY --from=build /opt/odeon /opt/odeon
# HOME and TMPDIR in /tmp: with a read-only root filesystem, /tmp (an emptyDir or --tmpfs) is the one
# writable place (TensorBoard and MLflow staging, torch and GDAL caches).
ENV PATH=/opt/odeon/bin:$PATH \
    ODEON_CONFIG=/etc/odeon/config.json \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GIT_PYTHON_REFRESH=quiet \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /tmp
# tini forwards SIGTERM to odeon, which saves and exits 143 within device_setup.stop_grace_period.
ENTRYPOINT ["tini", "--", "odeon"]
CMD ["train"]

# The images of the deployment, one target each:
#
#   docker build -t relaxtune .                                  # full (default): every role
#   docker build -t relaxtune --build-arg TORCH_VARIANT=cu128 .  # full, CUDA torch for GPU workers
#   docker build -t relaxtune-api --target api .                 # the HTTP API alone, slim
#
# The full image serves every Python service (api, controller, ray-head, ray-worker): Ray
# requires the same Python, Ray and project versions on every node, and the workers import
# the project's training code. The api image holds the project with the `api` extra of
# pyproject.toml only (no torch, escnn or Ray: the API process never imports them), for an
# API deployed apart from the cluster (`relaxtune serve --no-controller`, the admin and
# client commands).
#
# TORCH_VARIANT names a wheel index under https://download.pytorch.org/whl/ (cpu, cu126,
# cu128, ...): pick one that has a torch build matching pyproject.toml's range.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RELAXTUNE_ARTIFACTS=/shared/artifacts \
    RELAXTUNE_RAY_STORAGE=/shared/ray

# A fresh named volume mounted at /shared takes this folder's owner, so the unprivileged
# user can write Ray's storage and the artifacts there.
RUN useradd --create-home --uid 1000 relaxtune \
    && mkdir -p /shared/ray /shared/artifacts \
    && chown -R relaxtune:relaxtune /shared

WORKDIR /app


# ---- the API alone: the `api` extra, then the project without its other dependencies ----
FROM base AS api

COPY pyproject.toml /app/
COPY scripts/extra_requirements.py /app/scripts/
RUN python scripts/extra_requirements.py api > /tmp/api-requirements.txt \
    && pip install -r /tmp/api-requirements.txt

COPY . /app
RUN pip install --no-deps /app

USER relaxtune
WORKDIR /home/relaxtune
EXPOSE 8000
CMD ["relaxtune", "serve", "--no-controller", "--host", "0.0.0.0"]


# ---- every role (the default target: the last one) --------------------------------------
FROM base AS full

ARG TORCH_VARIANT=cpu
ARG TORCH_SPEC="torch>=2.2,<2.14"

# gfortran: escnn's py3nj dependency compiles Fortran at install time (it pulls gcc too).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gfortran \
    && rm -rf /var/lib/apt/lists/*

# torch first, in its own layer: the largest download, and it changes least often. The
# project's requirement is then already satisfied, so the next step fetches no other build.
RUN pip install "${TORCH_SPEC}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"

COPY . /app
RUN pip install /app

USER relaxtune
WORKDIR /home/relaxtune
EXPOSE 8000
CMD ["relaxtune", "--help"]

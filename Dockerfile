# One image for every Python service of the deployment (api, controller, ray-head,
# ray-worker): Ray requires the same Python, Ray and project versions on every node, and the
# workers import the project's training code.
#
#   docker build -t relaxtune .                               # CPU torch (small)
#   docker build -t relaxtune --build-arg TORCH_VARIANT=cu128 .   # CUDA torch for GPU workers
#
# TORCH_VARIANT names a wheel index under https://download.pytorch.org/whl/ (cpu, cu126,
# cu128, ...): pick one that has a torch build matching pyproject.toml's range.
FROM python:3.11-slim

ARG TORCH_VARIANT=cpu
ARG TORCH_SPEC="torch>=2.2,<2.14"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

# gfortran: escnn's py3nj dependency compiles Fortran at install time (it pulls gcc too).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gfortran \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# torch first, in its own layer: the largest download, and it changes least often. The
# project's requirement is then already satisfied, so the next step fetches no other build.
RUN pip install "${TORCH_SPEC}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"

COPY . /app
RUN pip install /app \
    && useradd --create-home --uid 1000 relaxtune \
    && mkdir -p /shared/ray /shared/artifacts \
    && chown -R relaxtune:relaxtune /shared

# A fresh named volume mounted at /shared takes this folder's owner, so the unprivileged
# user can write Ray's storage and the artifacts there.
USER relaxtune
WORKDIR /home/relaxtune
ENV RELAXTUNE_ARTIFACTS=/shared/artifacts \
    RELAXTUNE_RAY_STORAGE=/shared/ray

EXPOSE 8000
CMD ["relaxtune", "--help"]

# syntax=docker/dockerfile:1
# streamsrv server image. One file, two variants, chosen by build arguments:
#
#   GPU (default): docker build -t streamsrv:cuda .
#   CPU:           docker build -t streamsrv:cpu --build-arg BASE_IMAGE=ubuntu:24.04 \
#                      --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .
#
# The GPU base is CUDA 13.0 because the torch build pinned below is built for CUDA 13.0 (torch.version.cuda); the
# build stops if the two ever disagree. Its "base" flavour is enough: torch's wheels bring their own cuBLAS/cuDNN,
# and the NVIDIA Container Toolkit brings the driver (CUDA 13 needs driver 580 or newer).
#
# Run: docker run --gpus all -p 8080:8080 --shm-size 1g -v "$PWD/my-config:/config" -v streamsrv-cache:/cache \
#        streamsrv:cuda            (serves /config/streamsrv.yaml; docker-compose.yml does all of this)

ARG BASE_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.12.19

FROM ${UV_IMAGE} AS uv

# ---- build: a virtualenv in /opt/venv on a Python in /opt/python, both copied whole into the runtime stage.
FROM ${BASE_IMAGE} AS build
# The Python the project is tested with; uv's standalone builds give the same version on either base image
# (Ubuntu 24.04's own python3 is 3.12).
ARG PYTHON_VERSION=3.11
# torch and torchvision as tested (scripts/install.sh resolves them from PyPI, whose Linux wheels are CUDA builds;
# 2.14.1 is a CUDA 13.0 one); TORCH_INDEX picks the variant's wheels.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX=https://pypi.org/simple
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
RUN uv python install "${PYTHON_VERSION}" && uv venv --python "${PYTHON_VERSION}" /opt/venv
ENV VIRTUAL_ENV=/opt/venv
# torch first, from the variant's index; the project's install below keeps it (torch>=2.2 is satisfied).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
RUN /opt/venv/bin/python -c "import os, sys, torch; \
base = os.environ.get('CUDA_VERSION', ''); built = torch.version.cuda or ''; \
ok = base.startswith(built + '.') if base else not built; \
sys.exit(0 if ok else f'torch is built for CUDA {built or None} but the base image has CUDA {base or None}: ' \
         'keep BASE_IMAGE, TORCH_INDEX and TORCH_VERSION in step')"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamsrv ./streamsrv
# [fast]: the onnxruntime and openvino backends (with nncf for INT8), so inference.backend can be switched by config alone.
RUN --mount=type=cache,target=/root/.cache/uv uv pip install ".[fast]"

# ---- runtime
FROM ${BASE_IMAGE} AS runtime
# libgl1 and libglib: ultralytics installs the full opencv-python, whose cv2 links them. tini: PID 1 that forwards
# SIGTERM to the server and reaps its decoder and inference processes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0t64 tini ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/streamsrv streamsrv \
    && mkdir -p /config /cache \
    && chown streamsrv:streamsrv /config /cache
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
# /cache holds what is worth keeping between containers: exported ONNX/OpenVINO models (STREAMSRV_CACHE), weights
# that ultralytics downloads by name (into the working directory) and its settings (YOLO_CONFIG_DIR).
# "video" lets the NVIDIA runtime mount NVDEC for cameras with hwaccel: cuda.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STREAMSRV_CACHE=/cache/exports \
    YOLO_CONFIG_DIR=/cache/ultralytics \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,video
WORKDIR /cache
VOLUME ["/config", "/cache"]
# numeric, so Kubernetes runAsNonRoot can verify it without the image's /etc/passwd
USER 10001:10001
EXPOSE 8080
# /healthz: the API process is alive. /readyz (model loaded, cameras started) is for load balancers, not restarts.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["tini", "--", "streamsrv"]
CMD ["serve", "--config", "/config/streamsrv.yaml", "--host", "0.0.0.0", "--port", "8080"]

# streamsrv server image. One file, two variants, chosen by build arguments:
#
#   GPU (default): docker build -t streamsrv:cuda .
#   CPU:           docker build -t streamsrv:cpu --build-arg BASE_IMAGE=ubuntu:24.04 \
#                      --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .
#
# Behind a TLS-intercepting proxy, give the build its CA (a PEM file; the host's whole bundle will do):
#   docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt ...
# With no registry at all, any Debian 12 image works as the base (docs/deploy.md builds one with debootstrap):
#   --build-arg BASE_IMAGE=streamsrv-base:bookworm      (Python is then Debian's own 3.11, nothing from GitHub)
#
# The GPU base is CUDA 13.0 because the torch build pinned below is built for CUDA 13.0 (torch.version.cuda); the
# build stops if the two ever disagree. Its "base" flavour is enough: torch's wheels bring their own cuBLAS/cuDNN,
# and the NVIDIA Container Toolkit brings the driver (CUDA 13 needs driver 580 or newer).
#
# No "# syntax=" line: it would fetch the Dockerfile frontend from Docker Hub, and every BuildKit since Docker 20.10
# has the RUN --mount forms used here built in.
#
# Run: docker run --gpus all -p 8080:8080 --shm-size 1g -v "$PWD/my-config:/config" -v streamsrv-cache:/cache \
#        streamsrv:cuda            (serves /config/streamsrv.yaml; docker-compose.yml does all of this)

ARG BASE_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04

# ---- uv: the build's tools on the base image: CA trust, the base's python3, and uv from PyPI (pip reaches PyPI
# wherever the build can install packages at all; uv's own image lives on ghcr.io).
FROM ${BASE_IMAGE} AS uv
ARG UV_VERSION=0.12.19
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3-venv \
    && rm -rf /var/lib/apt/lists/*
# The optional secret "ca" joins the system bundle for every download of the build. Only this stage and the build
# stage see it; the image that ships does not.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then \
        cp /run/secrets/ca /usr/local/share/ca-certificates/build-ca.crt && update-ca-certificates; \
    fi
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}" \
    && ln -s /opt/uv/bin/uv /usr/local/bin/uv

# ---- build: a virtualenv in /opt/venv on a Python in /opt/python, both copied whole into the runtime stage.
FROM uv AS build
# The Python the project is tested with. If the base's own python3 is that version (Debian 12), uv uses it;
# otherwise (Ubuntu 24.04's is 3.12) uv downloads its standalone build of it into /opt/python.
ARG PYTHON_VERSION=3.11
# torch and torchvision as tested (scripts/install.sh resolves them from PyPI, whose Linux wheels are CUDA builds;
# 2.14.1 is a CUDA 13.0 one); TORCH_INDEX picks the variant's wheels.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX=https://pypi.org/simple
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
RUN mkdir -p /opt/python && uv venv --python "${PYTHON_VERSION}" /opt/venv
ENV VIRTUAL_ENV=/opt/venv
# torch first, from the variant's index; the project's install below keeps it (torch>=2.2 is satisfied).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
# A CUDA base needs the torch built for its CUDA. A base without CUDA runs any torch on the CPU; a CUDA build there
# only costs space (the CPU index's wheels are much smaller), so it is reported, not refused.
RUN /opt/venv/bin/python -c "import os, sys, torch; \
base = os.environ.get('CUDA_VERSION', ''); built = torch.version.cuda or ''; \
ok = base.startswith(built + '.') if base else True; \
base or not built or print(f'note: torch built for CUDA {built} on a base without CUDA: it runs on the CPU'); \
sys.exit(0 if ok else f'torch is built for CUDA {built or None} but the base image has CUDA {base}: ' \
         'keep BASE_IMAGE, TORCH_INDEX and TORCH_VERSION in step')"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamsrv ./streamsrv
# [fast]: the onnxruntime and openvino backends (with nncf for INT8), so inference.backend can be switched by config alone.
RUN --mount=type=cache,target=/root/.cache/uv uv pip install ".[fast]"

# ---- runtime
FROM ${BASE_IMAGE} AS runtime
# libgl1 and libglib: ultralytics installs the full opencv-python, whose cv2 links them (libglib2.0-0 is
# libglib2.0-0t64 on Ubuntu 24.04, which apt picks by itself). tini: PID 1 that forwards SIGTERM to the server and
# reaps its decoder and inference processes. python3 only when the virtualenv is built on the base's own Python.
# hadolint ignore=DL3008,SC2086
RUN --mount=type=bind,from=build,source=/opt/venv/pyvenv.cfg,target=/tmp/pyvenv.cfg \
    packages="libgl1 libglib2.0-0 tini ca-certificates"; \
    if grep -q '^home = /usr/bin' /tmp/pyvenv.cfg; then packages="$packages python3"; fi; \
    apt-get update \
    && apt-get install -y --no-install-recommends $packages \
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

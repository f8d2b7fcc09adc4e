# syntax=docker/dockerfile:1
#
# bluegreen: the blue/green proxy and its CLI. The demo orders app runs from the same image:
#   docker build -t bluegreen .
#   docker run --rm -p 8080:8080 -v $PWD/bluegreen.yaml:/etc/bluegreen/bluegreen.yaml:ro bluegreen
#   docker run --rm -e DATABASE_URL=... --entrypoint python bluegreen -m bluegreen.demo.app --version v1 --host 0.0.0.0 --port 8000
#
# The HEALTHCHECK asks the admin API's /readyz (python's urllib: no curl in the image).
# The admin API listens on 127.0.0.1:9900 unless the config says otherwise; set
# BLUEGREEN_READYZ_URL when it listens elsewhere.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
# The data plane is compiled with mypyc (BLUEGREEN_COMPILE=1; see README):
# this stage needs a C compiler, the final image only the built extensions.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BLUEGREEN_COMPILE=1
# Unpinned on purpose: the slim base's Debian release pins the compiler it gets.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY build_backend ./build_backend
COPY bluegreen ./bluegreen
RUN python -m venv /opt/bluegreen \
 && /opt/bluegreen/bin/pip install ".[fast]" \
 && ln -s "$(/opt/bluegreen/bin/python -c 'import bluegreen.demo as d; print(d.MIGRATIONS_DIR)')" \
          /opt/bluegreen/demo-migrations

FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="bluegreen" \
      org.opencontainers.image.description="Zero-downtime blue/green rollouts for HTTP apps on PostgreSQL" \
      org.opencontainers.image.licenses="MIT"
# BLUEGREEN_LISTEN: the default config's proxy address (all interfaces, in a container).
ENV PATH=/opt/bluegreen/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BLUEGREEN_LISTEN=0.0.0.0:8080 \
    BLUEGREEN_READYZ_URL=http://127.0.0.1:9900/readyz
RUN groupadd --system --gid 10001 bluegreen \
 && useradd --system --uid 10001 --gid bluegreen --home-dir /var/lib/bluegreen --create-home \
            --shell /usr/sbin/nologin bluegreen
COPY --from=build /opt/bluegreen /opt/bluegreen
COPY config/bluegreen.yaml /etc/bluegreen/bluegreen.yaml
WORKDIR /var/lib/bluegreen
USER 10001:10001
# 8080: the proxy; 9900: the admin API (/healthz, /readyz, /metrics, /api/v1)
EXPOSE 8080 9900
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['BLUEGREEN_READYZ_URL'], timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["bluegreen"]
CMD ["serve", "--config", "/etc/bluegreen/bluegreen.yaml"]

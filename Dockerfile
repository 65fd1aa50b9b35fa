# syntax=docker/dockerfile:1
# Switchboard: a multi-stage build on python:3.11-slim. The image runs as a non-root user
# and writes nothing outside /tmp, so it runs with a read-only root filesystem (mount /tmp as
# a tmpfs / emptyDir). Build: docker build -t switchboard .

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first (a layer that changes only with the lock), pinned by requirements.lock:
# the project's runtime dependencies, constrained to the locked versions (dev tools are not
# installed: nothing at run time requires them).
COPY requirements.lock pyproject.toml README.md ./
COPY service ./service
COPY generated ./generated
COPY clients/python ./clients/python
RUN /opt/venv/bin/pip install --constraint requirements.lock . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    SWITCHBOARD_CONFIG=/etc/switchboard/switchboard.yaml
RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin switchboard
COPY --from=build /opt/venv /opt/venv
# Where the keys file and upstream keys are mounted; owned by the user so that a named
# volume mounted here (compose) is writable for `switchboard keys`.
RUN install -d -o 10001 -g 10001 -m 0750 /etc/switchboard/secrets
COPY deploy/k8s/base/switchboard.yaml /etc/switchboard/switchboard.yaml
USER 10001:10001
WORKDIR /tmp
# 50051: gRPC (AgentService, Health, reflection). 8080: HTTP (OpenAI-compatible API,
# Connect). 9464: Prometheus metrics.
EXPOSE 50051 8080 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["switchboard", "health", "--address", "127.0.0.1:50051"]
ENTRYPOINT ["switchboard"]
CMD ["serve"]

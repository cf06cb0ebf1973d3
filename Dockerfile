# One image for every process of the session layer:
#   opencode-poller                                        (the default command)
#   opencode-gateway                                       (set GATEWAY_HOST=0.0.0.0 to be reachable from outside)
#   opencode-sessions migrate                              (one-shot; sql/ ships in the image, see below)
#   python -m shared.dev.simulator --host 0.0.0.0 --port 4096   (the OpenCode simulator, for local stacks)
#
#   docker build -t opencode-session-layer:local .
#
# Every dependency is installed at uv.lock's version with its hash checked (uv itself comes from
# .ci/uv-requirements.txt, hash-checked too), so the image built next month is the image built today. The project
# is installed as a wheel (not editable): sql/*.sql travels as wheel data-files and lands in
# $PREFIX/share/opencode-session-layer/sql, where shared.store.migrate.sql_dir() looks when there is no checkout.
# The build's last step checks that, so an image that could not migrate is never produced.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1
ENV UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1
WORKDIR /src
COPY .ci/uv-requirements.txt .ci/
RUN pip install --require-hashes --no-deps -r .ci/uv-requirements.txt
COPY pyproject.toml uv.lock README.md ./
COPY sql/ sql/
COPY shared/ shared/
COPY poller/ poller/
COPY gateway/ gateway/
# The runtime dependencies only (no extras, no groups), pinned and hashed; the wheel is built with the build
# backend pinned in pyproject.toml's [tool.uv].
RUN mkdir /wheels \
    && uv export --frozen --no-dev --no-default-groups --no-emit-project --format requirements-txt \
        --output-file /wheels/requirements.txt \
    && uv build --wheel --out-dir /wheels .

FROM python:${PYTHON_VERSION}-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --require-hashes --no-deps -r /wheels/requirements.txt \
    && pip install --no-deps /wheels/*.whl \
    && python -c "from shared.store.migrate import load_migrations; assert load_migrations(), 'no sql/ migrations'" \
    && groupadd --system --gid 10001 opencode \
    && useradd --system --uid 10001 --gid opencode --home-dir /home/opencode --create-home \
        --shell /usr/sbin/nologin opencode

# Numeric, so Kubernetes' runAsNonRoot can check it. Nothing is written outside /tmp (mount a tmpfs there
# when the root filesystem is read-only); the bytecode was compiled at install time.
USER 10001:10001
WORKDIR /home/opencode
ENV GATEWAY_HOST=0.0.0.0 GATEWAY_PORT=8080
EXPOSE 8080 4096
# Every entry point stops cleanly on SIGTERM: the poller releases its leases (about 2 s), the gateway closes
# its streams (at most 5 s). Give the container longer than that (compose stop_grace_period, Kubernetes
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
CMD ["opencode-poller"]

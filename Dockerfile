# The featurestore image docker-compose.yml runs as the registry, the feature server
# and the consumer: the package with its dependencies, the example definitions and
# contracts. Its entry point is the `featurestore` command.
#
# Dependencies come from the checked-in lock (uv.lock: exact versions and hashes), the
# same one `make test` installs, through uv pinned by hash in uv-bootstrap.txt; the
# services run as an unprivileged user.
FROM python:3.11-slim
ENV UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY uv-bootstrap.txt /tmp/uv-bootstrap.txt
RUN pip install --no-cache-dir --require-hashes -r /tmp/uv-bootstrap.txt
WORKDIR /app
# The dependencies first (a layer that changes only with the lock), then the project.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-install-project --no-editable --extra report --no-cache
COPY featurestore ./featurestore
RUN uv sync --locked --no-editable --extra report --no-cache
COPY consumers ./consumers
COPY schemas ./schemas
# An unprivileged user owns nothing but the offline store's folder (compose mounts a
# volume there, which starts with the folder's owner).
RUN useradd --system --uid 10001 --no-create-home --home-dir /app featurestore \
    && mkdir -p /data/offline && chown featurestore /data/offline
USER featurestore
ENV PATH=/app/.venv/bin:$PATH
ENTRYPOINT ["featurestore"]

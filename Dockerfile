# The featurestore image docker-compose.yml runs as the registry, the feature server
# and the consumer: the package with its dependencies, the example definitions and
# contracts. Its entry point is the `featurestore` command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY featurestore ./featurestore
RUN pip install --no-cache-dir .
COPY consumers ./consumers
COPY schemas ./schemas
ENTRYPOINT ["featurestore"]

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY projections projections
COPY workers workers
COPY tenantry tenantry
COPY bench bench
RUN pip install --no-cache-dir . && mkdir -p /var/lib/tenantry /srv/storage \
    && chown nobody /var/lib/tenantry /srv/storage
USER nobody
ENV TENANTRY_STATE_DIR=/var/lib/tenantry
CMD ["tenantry", "up"]

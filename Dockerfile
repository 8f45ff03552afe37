FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY projections projections
COPY workers workers
COPY tenantry tenantry
COPY bench bench
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT []
CMD ["tenantry", "up"]

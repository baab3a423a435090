FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 orchestrator
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY orchestrator ./orchestrator
COPY tasks ./tasks
COPY workers ./workers
RUN pip install . && chown -R orchestrator /app
USER orchestrator
CMD ["orchestrator", "--help"]

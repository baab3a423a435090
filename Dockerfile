# The production image: `pip install .`, no extra, so a worker carries no simulator,
# embedded server or plotting library. compose.yaml's simulator services (profile "sim")
# build the same file with EXTRAS=demo, under their own image name.
FROM python:3.11-slim
ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 orchestrator
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY orchestrator ./orchestrator
COPY tasks ./tasks
COPY workers ./workers
RUN pip install ".${EXTRAS:+[$EXTRAS]}" && chown -R orchestrator /app
USER orchestrator
CMD ["orchestrator", "--help"]

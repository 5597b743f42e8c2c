# One image for the worker, the API and the simulator (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data

WORKDIR /app
COPY . .
# Editable on purpose: the migrations runner reads migrations/ next to the package in the source tree.
RUN pip install -e . \
    && useradd --create-home --uid 10001 telemetrypulse \
    && mkdir -p /data \
    && chown telemetrypulse:telemetrypulse /data

USER telemetrypulse
EXPOSE 8000
CMD ["telemetrypulse", "api", "--host", "0.0.0.0", "--port", "8000"]

# One image for the worker, the sink, the API, the simulator and the notifier (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data

WORKDIR /src
COPY . .
# A regular install, not an editable one: the migrations are package data, so the installed package needs nothing of
# the source tree, which is removed (devkit/, tests/ and bench/ are not in the build context or the wheel anyway).
RUN pip install . \
    && rm -rf /src \
    && useradd --create-home --uid 10001 telemetrypulse \
    && mkdir -p /data \
    && chown telemetrypulse:telemetrypulse /data

WORKDIR /data
USER telemetrypulse
EXPOSE 8000
CMD ["telemetrypulse", "api", "--host", "0.0.0.0", "--port", "8000"]

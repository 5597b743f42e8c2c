"""The worker's retention timer (SPEC §11): the job of telemetrypulse/retention.py at start, then every hour.

Only PostgreSQL is touched, with awaits on a connection of the job's own: no event is held up while it runs, and a
failed run (PostgreSQL down) is logged and tried again a minute later. With several workers, one runs it at a time.
"""

from __future__ import annotations

import logging

from telemetrypulse.app import app, settings
from telemetrypulse.retention import RetentionJob, RetentionPolicy

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 60.0  # how often the timer asks whether a run is due (hourly, or a minute after a failure)

policy = RetentionPolicy.from_settings(settings)
retention_job = RetentionJob(settings.dsn, policy)


@app.task
async def enforce_retention_at_start() -> None:
    log.info("retention: %s", policy.describe())
    await retention_job.run_if_due()


@app.timer(interval=CHECK_INTERVAL_S)
async def enforce_retention() -> None:
    await retention_job.run_if_due()

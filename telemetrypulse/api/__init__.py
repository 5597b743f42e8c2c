"""The HTTP API and live dashboard (SPEC §8): FastAPI app in `main`, one router per resource in `routes/`."""

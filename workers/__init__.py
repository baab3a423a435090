"""The Celery app, worker profiles and per-process hooks."""

"""Celery tasks: thin adapters from messages to :mod:`orchestrator`."""

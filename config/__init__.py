"""Typed settings for the orchestrator, read once from ``ORCH_*`` environment variables.

Nothing else in the project reads ``os.environ``: everything asks :func:`load_settings`.
"""

from config.celery import build_celery_config
from config.settings import InvalidSettings, Settings, load_settings

__all__ = ["InvalidSettings", "Settings", "build_celery_config", "load_settings"]

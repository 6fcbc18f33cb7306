#!/bin/sh
# One-off "database migration" step: prints a few lines and exits with $MIGRATE_EXIT (0).
echo "Running migrations"
echo "Migrated: 2026_01_01_000000_create_users_table"
echo "Migrated: 2026_01_02_000000_create_orders_table"
code="${MIGRATE_EXIT:-0}"
if [ "$code" != 0 ]; then
    echo "Migration failed (exit $code)" >&2
fi
exit "$code"

#!/bin/sh
# Web container start: apply migrations, then serve. It never creates or resets an account:
# the first administrator comes from a one-time command (docs/deploy.md):
#   docker compose run --rm -e PLEURA_ADMIN_PASSWORD web python manage.py create_admin --username NAME
set -e
python /app/manage.py migrate --noinput
exec "$@"

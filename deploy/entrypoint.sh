#!/bin/sh
# Web container start: migrate, make sure the admin user and demo project exist, then serve.
set -e
python /app/manage.py migrate --noinput
python /app/manage.py setup_demo
exec "$@"

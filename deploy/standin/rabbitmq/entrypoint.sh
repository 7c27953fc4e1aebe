#!/bin/sh
# The official image's contract: the default user and password come from the environment
# (they only take effect on a node's first start, when its data directory is empty).
set -eu
{
    echo "listeners.tcp.default = 5672"
    echo "management.tcp.port = 15672"
    echo "loopback_users = none"
    if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then echo "default_user = $RABBITMQ_DEFAULT_USER"; fi
    if [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then echo "default_pass = $RABBITMQ_DEFAULT_PASS"; fi
} >/etc/rabbitmq/rabbitmq.conf
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
exec "$@"

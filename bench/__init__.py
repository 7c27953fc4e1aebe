"""Carousel's benchmark harness: `make bench` (or `python -m bench NAME ...`).

Each measurement prints a table and writes JSON under bench/results/. Benchmarks run
real processes on the local RabbitMQ (AMQP_URL) with private queue prefixes; they are
not tests and do not run in CI.
"""

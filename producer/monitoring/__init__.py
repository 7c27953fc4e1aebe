"""Reactive cloud monitoring inside the producer (docs/design.md §9).

Per source, a fetcher lists the cloud, then follows its change stream (or polls), and
relists every ``MONITOR_RESYNC_INTERVAL`` or when the stream breaks; the updater diffs every
observation against the repository and yields changes only where something changed; the
policies turn changes (and time) into events, which go through the producer's own
publish path. :mod:`producer.monitoring.model` holds the types all of them share.
"""

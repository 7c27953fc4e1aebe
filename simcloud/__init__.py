"""simcloud: a small simulated cloud standing in for a real one in Carousel's tests and
demos -- hosts, VMs, groups, lifecycle actions that take time, injectable faults, a
list-and-watch state API and an OpenStack Compute API subset. ``python -m simcloud``
serves it; :class:`simcloud.model.Cloud` is the model, :func:`simcloud.app.create_app`
the HTTP app."""

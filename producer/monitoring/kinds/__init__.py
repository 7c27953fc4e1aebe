"""Carousel's own monitoring policy kinds, one module each, registered by name in the
entry-point group ``carousel.policies`` as a plug-in's kinds are (``pyproject.toml``)."""

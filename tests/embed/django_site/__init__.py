"""A Django project with tuswsgi mounted at /uploads (docs/embedding.md's Django recipe)."""

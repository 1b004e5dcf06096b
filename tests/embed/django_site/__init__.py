"""A Django project with tuswsgi mounted at /uploads (the README's Django recipe)."""

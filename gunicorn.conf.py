"""gunicorn reads this file from the working directory: ``gunicorn tuswsgi:app`` run
from the checkout gets the production settings (tuswsgi/gunicorn_conf.py)."""
from tuswsgi.gunicorn_conf import *  # noqa: F403

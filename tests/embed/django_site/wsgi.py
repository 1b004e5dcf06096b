"""The project's WSGI entry point, with tuswsgi mounted at /uploads."""

import os

from django.core.wsgi import get_wsgi_application
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import tuswsgi

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "embed.django_site.settings")
django_app = get_wsgi_application()

application = DispatcherMiddleware(django_app, {
    "/uploads": tuswsgi.create_app(hooks_python="embed.django_site.tushooks:authorize",
                                   hooks_enabled="pre-access,pre-create", upload_page="off"),
})

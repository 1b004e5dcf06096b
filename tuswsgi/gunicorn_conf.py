"""Production settings for gunicorn, used by ``tuswsgi serve``, ``deploy/gunicorn.conf.py``
and the checkout's own ``gunicorn.conf.py``.

Load with ``gunicorn -c python:tuswsgi.gunicorn_conf tuswsgi:app``.  The values
come from tuswsgi's settings table (``tus.ini`` or ``TUSWSGI_*``), read here
once: into gunicorn's own settings where gunicorn has one (``bind``,
``workers``, ``threads``, ``worker_connections``, ``keepalive``, ``accesslog``),
and into the worker class for the rest (:meth:`TusWorker.configured`).
gunicorn's command line and ``GUNICORN_CMD_ARGS`` override them.
"""

import os

from tuswsgi.config import ConfigError, load_config
from tuswsgi.server.stock import post_worker_init  # noqa: F401  (a gunicorn server hook)
from tuswsgi.server.worker import TusWorker

try:
    _settings = load_config()
except ConfigError:  # reported, with the key and value, when the application loads
    _settings = load_config(None, environ={})

#: Listen address (``bind``): loopback unless the operator says otherwise.
bind = _settings.bind

#: tuswsgi's worker (tuswsgi/server/): exact framing, a timeout on every socket
#: state, capacity kept for requests without a body, a clean 503 when full.
worker_class = TusWorker.configured(_settings)
#: Processes for the CPUs (checksums, JSON, the GIL); threads for open uploads.
workers = _settings.workers or (os.cpu_count() or 1)
threads = _settings.threads
#: Open connections per worker, idle and waiting ones included.
worker_connections = _settings.max_connections
#: Connections waiting to be accepted (the kernel caps it at net.core.somaxconn).
backlog = 4096

#: The worker checks in from its event loop, so this bounds a hung worker, not an
#: upload; hour-long PATCH requests are fine.  A silent client is cut by
#: tuswsgi's own ``network_timeout`` instead.
timeout = 120
#: On SIGTERM running bodies stop at once (bytes kept, 503); this is for the rest.
graceful_timeout = 30
#: Clients resume with many requests on one connection; keep it open between them.
keepalive = int(_settings.keepalive_timeout)

#: Room for realistic Upload-Metadata (file names, types, app data) and long URLs;
#: the head as a whole is bounded by ``max_head_size``.
limit_request_line = 8190
limit_request_field_size = _settings.max_head_size
limit_request_fields = 100

#: tuswsgi logs one line per request itself (method, path, status, error code,
#: offset, duration, request ID), so gunicorn's access log is off unless
#: ``accesslog`` names a file (or ``-``); its format carries the upload fields.
accesslog = _settings.accesslog or None
access_log_format = (
    '%(h)s "%(r)s" %(s)s %(B)s %(M)sms offset=%({upload-offset}i)s->%({upload-offset}o)s '
    'length=%({upload-length}i)s req=%({x-request-id}i)s'
)

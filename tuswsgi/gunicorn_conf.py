"""Production settings for gunicorn, used by ``tuswsgi serve`` and ``deploy/gunicorn.conf.py``.

Load with ``gunicorn -c python:tuswsgi.gunicorn_conf tuswsgi:app``.  Every value
can be overridden on the gunicorn command line or with ``GUNICORN_CMD_ARGS``.
"""

import os

#: Listen address; ``TUSWSGI_BIND`` overrides (e.g. ``0.0.0.0:8000`` or ``unix:/run/tuswsgi.sock``).
bind = os.environ.get("TUSWSGI_BIND", "127.0.0.1:8000")

#: Threads, not processes, carry the concurrency: uploads spend their time waiting
#: on sockets and disks, and a thread costs far less memory than a worker.
worker_class = "gthread"
workers = int(os.environ.get("TUSWSGI_WORKERS", min(os.cpu_count() or 1, 4)))
threads = int(os.environ.get("TUSWSGI_THREADS", 32))

#: gthread workers check in from their main loop, so this bounds a hung worker,
#: not an upload; hour-long PATCH requests are fine.  A silent client is cut by
#: tuswsgi's own ``network_timeout`` instead.
timeout = 120
#: Running uploads get this long after SIGTERM to store what they have.
graceful_timeout = 30
#: Clients resume with many requests on one connection; keep it open between them.
keepalive = 75

#: Room for realistic Upload-Metadata (file names, types, app data) and long URLs.
limit_request_line = 8190
limit_request_field_size = 65536
limit_request_fields = 100

#: tuswsgi logs one line per request itself (method, path, status, error code,
#: offset, duration, request ID), so gunicorn's access log is off unless
#: ``TUSWSGI_ACCESSLOG`` names a file (or ``-``); its format carries the upload fields.
accesslog = os.environ.get("TUSWSGI_ACCESSLOG") or None
access_log_format = (
    '%(h)s "%(r)s" %(s)s %(B)s %(M)sms offset=%({upload-offset}i)s->%({upload-offset}o)s '
    'length=%({upload-length}i)s req=%({x-request-id}i)s'
)

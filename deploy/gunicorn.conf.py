"""gunicorn settings for running tuswsgi in production.

    gunicorn -c deploy/gunicorn.conf.py tuswsgi:app

The values live in ``tuswsgi/gunicorn_conf.py`` (so ``tuswsgi serve`` and this
file cannot drift apart) and are imported below; this file explains them and
adds what only a deployment wants.  Override any of them on the command line
(``--bind``, ``--workers``) or with ``GUNICORN_CMD_ARGS``; the serving settings
(``bind``, ``workers``, ``threads``, ``reserved_threads``, ``accesslog``) come from
tuswsgi's settings table, so ``tus.ini`` and ``TUSWSGI_*`` set them.

What the imported settings are, and why:

bind = bind (tus.ini) or $TUSWSGI_BIND, default 127.0.0.1:8000
    Loopback only.  Put nginx (deploy/nginx.conf) in front for TLS, and keep
    gunicorn unreachable from outside: with ``behind_proxy = on`` the app trusts
    X-Forwarded-* headers, which only the proxy may set.
    ``unix:/run/tuswsgi/tuswsgi.sock`` works as well.

worker_class = TusWorker, with tuswsgi's settings (tuswsgi/server/)
    A gunicorn worker on gunicorn's documented Worker base class that owns its
    connections: exact request framing (an early answer never desyncs a
    kept-alive connection, and closes lingering so nginx reads the status), a
    timeout on every socket state (``head_timeout``, ``keepalive_timeout``,
    ``network_timeout``, ``min_body_rate``, ``linger_timeout``), ``reserved_threads``
    threads for requests without a body, 503 with Retry-After when its body
    threads are all taken (after the slowest body below ``min_body_rate`` gave
    its place), and it accepts a connection only while it has room, so a request
    never waits in a full worker while another has threads free.

workers = workers or one per CPU; threads = threads (6000)
    Processes for the CPUs (checksums, JSON, the GIL), threads for open uploads:
    each open upload holds a thread while its body streams, with a small stack.
    worker_connections = max_connections (10000): idle and waiting connections
    hold no thread, only a descriptor; at the limit the oldest idle or
    slow-head one is closed for a new one.
    See docs/performance.md, "Capacity", for what one box holds and how to raise it.

timeout = 120
    The worker checks in from its event loop, so this bounds a *hung worker*,
    not a request: an hour-long PATCH is fine.  A client that stops sending is
    cut by tuswsgi's own ``network_timeout`` (60 s), keeping what it sent.

graceful_timeout = 30
    On SIGTERM (systemctl stop/restart, a deploy) running uploads are
    interrupted at once: what they sent is stored and they get 503, and tus
    clients resume after the restart.  30 s is for the requests that are not
    uploads to finish.  systemd's TimeoutStopSec must be longer (it is 45 s in
    deploy/tuswsgi.service).

keepalive = keepalive_timeout (75 s)
    A resuming client sends HEAD and PATCH after PATCH; reusing the connection
    saves a TCP (and, at the proxy, TLS) handshake each time.  Longer than
    nginx's upstream keepalive_timeout (60 s) so gunicorn never closes a
    connection nginx is about to reuse.

limit_request_line = 8190, limit_request_field_size = max_head_size (64 KiB), limit_request_fields = 100
    Upload-Metadata carries base64 file names, types and app data; it may be up
    to ``max_metadata_size`` (16 KiB) and base64 grows it by a third, so the
    8 KiB gunicorn default would refuse legitimate uploads with a bare 400.
    The head as a whole is bounded by ``max_head_size``: a larger one is
    answered 431 as soon as it crosses the limit, before it is all read.

accesslog off unless ``accesslog`` (TUSWSGI_ACCESSLOG) is set
    tuswsgi itself logs one line per request on stderr (journald under systemd)
    with method, path, status, error code, the new Upload-Offset, duration and
    X-Request-ID, plus a line per upload event (created, received, interrupted,
    finished): enough to follow an upload that "stalls at 43 %" without a
    debugger.  gunicorn's own access log would repeat it at a real cost per
    request; TUSWSGI_ACCESSLOG=- turns it on, with a format that carries the
    client's and the server's Upload-Offset and Upload-Length.
"""

import os

from tuswsgi.config import PRODUCTION_DEFAULTS, apply_defaults

# Every setting of tuswsgi/gunicorn_conf.py, as documented above; a setting added
# there reaches this file without an edit.
from tuswsgi.gunicorn_conf import *  # noqa: F403

# A production endpoint serves the tus API only (the browser upload page is a demo)
# unless the operator asks for more: TUSWSGI_UPLOAD_PAGE=on, or upload_page = on in
# the file named by TUSWSGI_CONFIG.  Set here, in the master, before the workers are
# forked and load the app; `tuswsgi serve` does the same.
apply_defaults(os.environ, PRODUCTION_DEFAULTS)

"""WSGI entry file for Phusion Passenger (cPanel/Plesk "Setup Python App") and
Apache mod_wsgi (deploy/apache-mod_wsgi.conf): both load a file and call its
``application``.

Put it in the application root next to a ``tus.ini``:

    app-root/
        passenger_wsgi.py   this file
        tus.ini             [tuswsgi] settings; upload_dir outside the web root
        lib/                optional: `pip install --target lib tuswsgi_server-*.whl` where
                            the host offers no virtualenv

Configuration: ``$TUSWSGI_CONFIG`` if the host sets it, else the ``tus.ini``
next to this file, else the usual ``./tus.ini`` / built-in defaults.  Under
mod_wsgi, ``SetEnv`` does not reach ``os.environ``: use the ``tus.ini``.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

if os.path.isdir(os.path.join(HERE, "lib")):
    sys.path.insert(0, os.path.join(HERE, "lib"))
if not os.environ.get("TUSWSGI_CONFIG") and os.path.isfile(os.path.join(HERE, "tus.ini")):
    os.environ["TUSWSGI_CONFIG"] = os.path.join(HERE, "tus.ini")

from tuswsgi import create_app  # noqa: E402 (after the path set-up above)
from tuswsgi.config import PRODUCTION_DEFAULTS, apply_defaults  # noqa: E402

apply_defaults(os.environ, PRODUCTION_DEFAULTS)  # the upload page is off unless asked for

# A bad setting raises tuswsgi.ConfigError here, naming the key and the value; the
# server's error log shows it.
application = create_app()

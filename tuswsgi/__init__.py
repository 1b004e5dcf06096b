"""tuswsgi: a resumable-upload server speaking tus 1.0.0, as a WSGI application.

A WSGI server importing ``tuswsgi:app`` serves with the configuration found at start-up
(``$TUSWSGI_CONFIG``, else ``./tus.ini``, else the built-in defaults);
``create_app()`` builds an application to mount inside another WSGI stack.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Optional

from .config import ConfigError, load_config
from .logs import configure_logging
from .server import APP_LOAD_ERROR
from .wsgi import TusApp

__version__ = "0.1.0"
__all__ = ["ConfigError", "TusApp", "__version__", "app", "create_app"]

def create_app(config_file: Optional[str] = None, **overrides: Any) -> TusApp:
    """Build the WSGI application from a config file and/or keyword overrides.

    Raises :class:`ConfigError`, naming the key and value, when a setting is wrong.
    """
    return _warned(TusApp(load_config(config_file, **overrides)))


def _warned(application: TusApp) -> TusApp:
    """Say what the settings table's warnings find in the configuration, at start-up."""
    for warning in application.config.warnings:
        logging.getLogger("tuswsgi").warning("configuration warning: %s", warning)
    return application


def __getattr__(name: str) -> TusApp:
    """Build ``tuswsgi.app`` on first access, so importing the package reads no config."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        config = load_config()
        configure_logging(config.log_format)
        application = _warned(TusApp(config))  # hook functions are imported here
    except ConfigError as exc:
        print(f"tuswsgi: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(APP_LOAD_ERROR) from None
    from .server import warn_if_unsupported
    warn_if_unsupported()
    globals()["app"] = application
    return application


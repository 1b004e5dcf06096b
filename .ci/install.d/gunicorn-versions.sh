#!/usr/bin/env bash
# The worker's suites on other gunicorns than the newest (tests/server/test_gunicorn_versions.py):
#   /opt/tuswsgi-gunicorn-floor   the oldest release setup.py allows (tuswsgi.server.compat.FLOOR)
#   /opt/tuswsgi-gunicorn-fast    the newest release with its C request parser (gunicorn-h1c;
#                                 not gunicorn[fast], whose pin can be newer than PyPI's h1c)
# Each venv sees everything else installed, so only gunicorn differs.
set -euo pipefail
cd "$(dirname "$0")/../.."
floor=$(python -c "from tuswsgi.server.compat import FLOOR; print(FLOOR)")
python -m venv --system-site-packages /opt/tuswsgi-gunicorn-floor
/opt/tuswsgi-gunicorn-floor/bin/python -m pip install --quiet "gunicorn==$floor"
/opt/tuswsgi-gunicorn-floor/bin/python -c "import gunicorn; assert gunicorn.__version__ == '$floor', gunicorn.__version__"
python -m venv --system-site-packages /opt/tuswsgi-gunicorn-fast
/opt/tuswsgi-gunicorn-fast/bin/python -m pip install --quiet gunicorn-h1c
/opt/tuswsgi-gunicorn-fast/bin/python -c "import gunicorn_h1c"

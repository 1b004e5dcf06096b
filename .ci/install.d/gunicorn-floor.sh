#!/usr/bin/env bash
# The oldest gunicorn tuswsgi supports (tuswsgi.worker.GUNICORN_FLOOR), in a venv of
# its own that sees everything else installed: tests/server/test_gunicorn_floor.py runs the
# worker's suites there, so the floor setup.py declares is the one CI proves.
set -euo pipefail
cd "$(dirname "$0")/../.."
floor=$(python -c "import re; print(re.search(r'GUNICORN_FLOOR = \"(.+)\"', open('tuswsgi/worker.py').read())[1])")
venv=/opt/tuswsgi-gunicorn-floor
python -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet "gunicorn==$floor"
"$venv/bin/python" -c "import gunicorn; assert gunicorn.__version__ == '$floor', gunicorn.__version__"

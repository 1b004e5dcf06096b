#!/usr/bin/env bash
# The oldest release setup.py allows of each run-time dependency (werkzeug>=2.3 gives
# werkzeug==2.3, ...), unpacked without dependencies into a directory nothing imports:
# tests/unit/test_packaging.py reads each one's Requires-Python there (importlib.metadata)
# to prove that setup.py's python_requires is the floor they really need.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${TUSWSGI_DEPENDENCY_FLOORS:-/opt/tuswsgi-dependency-floors}"
rm -rf "$target"
# shellcheck disable=SC2046  # one word per pin
python -m pip install --quiet --no-deps --ignore-requires-python --target "$target" \
    $(python tests/support/setupinfo.py --floors)

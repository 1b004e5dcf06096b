#!/usr/bin/env bash
# Browser and tus-js-client tests: Chromium (Debian's), Playwright for Python (it
# drives /usr/bin/chromium; no browser download), node + tus-js-client, Uppy and esbuild
# (which bundles the Uppy test page when the tests run) from tests/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/../.."

export DEBIAN_FRONTEND=noninteractive
apt-get update
packages=(chromium fonts-dejavu-core)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    packages+=(nodejs npm)
fi
apt-get install -y --no-install-recommends "${packages[@]}"

python -m pip install playwright

cd tests
npm ci --no-audit --no-fund

#!/usr/bin/env bash
# check-shared-dir on GlusterFS (tests/server/test_sharedcheck_glusterfs.py): a private
# glusterd in a network namespace, one brick, two FUSE mounts.
# Run as root on a fresh Debian machine.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends glusterfs-server glusterfs-client fuse3 iproute2
# The package's own glusterd service is not used: the test starts a private one
# with its own working directory.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now glusterd >/dev/null 2>&1 || true
fi

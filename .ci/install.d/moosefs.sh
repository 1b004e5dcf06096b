#!/usr/bin/env bash
# Multi-host tests (tests/server/test_multihost_moosefs.py): a private MooseFS (master + 2 chunkservers
# in a network namespace) mounted twice with FUSE, one mount per "host".
# Run as root on a fresh Debian machine.
#   moosefs-master, moosefs-chunkserver, moosefs-client (mfsmount)  MooseFS 3.0
#   moosefs-cli          mfscli: asks the master which client sessions it holds
#   fuse3                fusermount3 and /etc/fuse.conf for mfsmount
#   iproute2             ip netns / veth for the daemons' own address
#   psmisc               fuser: who still uses a mount before it is torn down
#   strace               system-call traces when a shared-FS check fails
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
    moosefs-master moosefs-chunkserver moosefs-client moosefs-cli fuse3 iproute2 psmisc strace
# The packages' own services are not used (and need not run): the tests start
# private daemons with their own configuration and data directories.
for service in moosefs-master moosefs-chunkserver; do
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
done

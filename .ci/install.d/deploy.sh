#!/usr/bin/env bash
# System packages for the deployment tests (tests/server/test_deploy_*.py): the real
# servers that deploy/ configures, and what installing like a user takes.  Run as root
# on a fresh Debian machine.
#   nginx                      deploy/nginx.conf (TLS, round-robin upstream)
#   apache2                    deploy/.htaccess + tuswsgi.cgi (mod_cgid)
#   libapache2-mod-wsgi-py3    deploy/apache-mod_wsgi.conf (embeds /usr/bin/python3)
#   python3                    the Python that mod_wsgi and the CGI script run
#   openssl                    a self-signed certificate for the nginx tests
#   systemd                    systemd-analyze verify deploy/tuswsgi.service, and systemd
#                              itself running the recipe (tests/support/systemd.py)
#   util-linux                 unshare and nsenter, the namespaces that systemd runs in
#   python3-pip                python3 -m pip wheel: the systemd recipe's first line, as
#                              run on a Debian host
#   curl                       an HTTP/2 upload through nginx; the README's curl walk-through
#                              (tests/server/test_docs_commands.py)
#   python3-venv               python -m venv (Debian leaves ensurepip out without it): the
#                              gunicorn and systemd recipes and the README's run command are
#                              run as written, each into a fresh venv that pip fills from the
#                              package index (so these tests need the network, as users do)
#   strace                     faults injected at the system-call level (tests/server/test_syscall_faults.py)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
    nginx apache2 libapache2-mod-wsgi-py3 python3 python3-venv python3-pip openssl systemd \
    util-linux curl ca-certificates strace
# The packages' own services are not used (and need not run): the tests start
# private instances on free ports.

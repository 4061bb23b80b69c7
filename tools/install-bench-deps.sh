#!/usr/bin/env bash
# Installs what `make bench` compares the hub with: Debian's nginx and its nchan
# module (the benchmark runs nginx itself, on loopback, from a generated config),
# and the profiler used where a target is missed. Needs root (apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "install-bench-deps: run as root (apt-get install needs it)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
had_nginx=no
dpkg -s nginx >/dev/null 2>&1 && had_nginx=yes
apt-get update -qq
apt-get install -y -qq --no-install-recommends nginx libnginx-mod-nchan
# The package's own service is never used: the benchmark starts nginx as a child
# process with its own config. A service this script brought up on :80 is stopped;
# one that was there before is left alone.
if [ "$had_nginx" = no ] && command -v service >/dev/null 2>&1; then
    service nginx stop >/dev/null 2>&1 || true
fi

if [ -x .venv/bin/pip ]; then
    .venv/bin/pip install --quiet -e '.[dev,bench]'
fi

nginx -V 2>&1 | head -1
ls /usr/lib/nginx/modules/ | grep -i nchan
echo "install-bench-deps: nginx and nchan are installed"

#!/usr/bin/env bash
# Installs what the browser and alerting tests need from Debian's packages:
# chromium and chromium-driver (headless dashboard tests) and prometheus (promtool).
# Idempotent: when every command is already on the machine it returns at once.
set -euo pipefail

needed=()
command -v chromium >/dev/null 2>&1 || needed+=(chromium)
command -v chromedriver >/dev/null 2>&1 || needed+=(chromium-driver)
command -v promtool >/dev/null 2>&1 || needed+=(prometheus)

if [ "${#needed[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-browser: need root to install ${needed[*]}; run as root or install them by hand" >&2
    exit 1
fi

echo "install-browser: installing ${needed[*]}"
export DEBIAN_FRONTEND=noninteractive
# Another apt run on the machine holds the lock for a while; wait for it rather than fail.
apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
apt-get "${apt_opts[@]}" update -qq
apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${needed[@]}" >/dev/null

for tool in chromium chromedriver promtool; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "install-browser: $tool is still missing after the install" >&2
        exit 1
    }
done
echo "install-browser: $(chromium --version 2>/dev/null | head -1); $(promtool --version 2>&1 | head -1)"

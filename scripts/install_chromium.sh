#!/bin/sh
# Install Debian's Chromium and its matching chromedriver for the browser test
# (tests/integration/test_dashboard_browser.py). No-op when /usr/bin/chromium exists.
# Needs root (CI images run as root) and the distribution's package mirror.
set -eu

if [ -x /usr/bin/chromium ] && command -v chromedriver >/dev/null 2>&1; then
    echo "chromium: already installed ($(/usr/bin/chromium --version 2>/dev/null || echo unknown))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -n "$0" "$@"
    fi
    echo "install_chromium.sh: must run as root (apt-get install chromium chromium-driver)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
echo "chromium: $(/usr/bin/chromium --version)"
echo "chromedriver: $(chromedriver --version)"

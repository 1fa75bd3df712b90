#!/usr/bin/env bash
# Install Chromium for the dashboard's browser test (Debian bookworm, run as root).
#
# tests/platform/test_dashboard.py drives a headless browser through the playwright package (the
# `test` extra), pointed at Debian's /usr/bin/chromium: playwright never downloads browsers of
# its own here, so the browser comes from the distribution and its security updates.
# fonts-dejavu-core: the page's text (and the screenshot the test saves) needs one font at least.
#
# Idempotent: with the packages there it only checks that the browser starts.
set -euo pipefail

step() { printf '[install-chromium] %s\n' "$*" >&2; }
. "$(dirname "$0")/apt-packages.sh"
die() { printf '[install-chromium] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages)"

install_missing_packages chromium fonts-dejavu-core

version="$(/usr/bin/chromium --version 2>/dev/null)" \
  || die "'/usr/bin/chromium --version' fails; run it by hand to see why"
step "ok: $version"

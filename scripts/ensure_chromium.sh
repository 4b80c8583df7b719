#!/usr/bin/env bash
# The report tests render HTML in headless Chromium. Installs Debian's
# chromium when it is missing and this user can (root with apt-get);
# otherwise says how, and the browser tests will fail saying the same.
set -u
for b in chromium chromium-browser google-chrome; do
  command -v "$b" >/dev/null 2>&1 && exit 0
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the report tests (log: /tmp/chromium-install.log)"
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; } \
    > /tmp/chromium-install.log 2>&1 && exit 0
  echo "Could not install chromium: see /tmp/chromium-install.log" >&2
fi
echo "Chromium is missing: install it (e.g. 'sudo apt-get install chromium') for the report tests." >&2
exit 0

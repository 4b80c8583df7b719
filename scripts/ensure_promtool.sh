#!/usr/bin/env bash
# The dashboard tests check the Prometheus rules and scrape config with
# promtool. Installs Debian's prometheus package (which ships promtool) when
# promtool is missing and this user can (root with apt-get); otherwise says
# how, and those tests skip saying the same.
set -u
command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's prometheus (for promtool) for the dashboard tests (log: /tmp/promtool-install.log)"
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; } \
    > /tmp/promtool-install.log 2>&1 && exit 0
  echo "Could not install prometheus: see /tmp/promtool-install.log" >&2
fi
echo "promtool is missing: install it (e.g. 'sudo apt-get install prometheus') for the dashboard tests." >&2
exit 0

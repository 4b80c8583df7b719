#!/usr/bin/env bash
# A test tool from Debian's packages: exits at once when one of COMMANDs is on
# PATH; else installs PACKAGE when this user can (root with apt-get); else
# says how, and the tests that need it say the same.
#   scripts/ensure_debian_tool.sh PACKAGE "WHAT NEEDS IT" COMMAND [COMMAND ...]
set -u
package=$1 purpose=$2
shift 2
wanted=$1  # Named in the message: the command the tests look for.
for command in "$@"; do
  command -v "$command" >/dev/null 2>&1 && exit 0
done
log=/tmp/$package-install.log
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's $package for $purpose (log: $log)"
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$package"; } \
    > "$log" 2>&1 && exit 0
  echo "Could not install $package: see $log" >&2
fi
echo "$wanted is missing: install it (e.g. 'sudo apt-get install $package') for $purpose." >&2
exit 0

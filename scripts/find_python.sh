#!/usr/bin/env bash
# Prints the path of a Python 3.10 or 3.9 interpreter (TFX 1.16 supports only
# these), looking on PATH, then in pyenv. Exits 1 with one sentence if none.
set -u

is_supported() {
  "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 10), (3, 9)) else 1)' \
    >/dev/null 2>&1
}

candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
candidates+=(python3.10 python3.9)
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(10|9)\.' | sort -rV); do
    candidates+=("$(pyenv prefix "$v")/bin/python")
  done
fi
for d in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10.* "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9.*; do
  [ -x "$d/bin/python" ] && candidates+=("$d/bin/python")
done
candidates+=(python3)

for c in "${candidates[@]}"; do
  path=$(command -v "$c" 2>/dev/null) || continue
  if is_supported "$path"; then
    echo "$path"
    exit 0
  fi
done
echo "No Python 3.10 or 3.9 found (TFX 1.16 needs one): install it, e.g. 'pyenv install 3.10.13' or your OS's python3.10 package, or set PYTHON=/path/to/python3.10." >&2
exit 1

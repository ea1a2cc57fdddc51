#!/usr/bin/env bash
# Install everything the tests need, then run them. README's test command; .ci/run calls it too.
# Usage: bash scripts/test.sh [pytest args…]
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)  # makes the TLS test's self-signed certificate
# The operator console's browser tests drive Debian's chromium with Playwright (no browser download).
[ -x /usr/bin/chromium ] || need_apt+=(chromium fonts-wqy-microhei)  # a CJK font, so screenshots show the Chinese
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing ${need_apt[*]} from Debian's packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
# The host editable (so tests see the working tree); the plugins as regular installs, exactly as a
# third party's plugin would be installed, so missing package data fails here and not in production.
"$PY" -m pip install -q --disable-pip-version-check -e ".[test,server]"
"$PY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
  ./plugins/car_client ./plugins/qzzp ./plugins/lvyou

exec "$PY" -m pytest "$@"

#!/usr/bin/env bash
# Run Beryl's whole test suite from a fresh checkout: creates .venv, installs
# the package with its test extra and the npm packages of the interop tests
# and of the benchmarks' load clients, then runs ruff, mypy --strict (beryl,
# tests and bench), the API reference build and the changelog draft, and
# every trial test (unit, end to end, interop).
# Arguments, if any, are trial targets to run instead of all of tests/.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
# Stop at once on an unsupported Python (pip would backtrack for minutes).
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "scripts/test.sh: Beryl needs Python 3.11 or newer; $python is $("$python" -V 2>&1 || echo missing) (set PYTHON=python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# compat mode puts the checkout on sys.path, so twistd finds
# twisted/plugins/beryl_plugin.py from the source tree.
.venv/bin/pip install --quiet --disable-pip-version-check \
  -e '.[test]' --config-settings editable_mode=compat

if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
  (cd bench && npm ci --no-audit --no-fund --loglevel=error)
elif [ "${CI:-}" = "true" ]; then
  echo "scripts/test.sh: node and npm are required in CI for the interop tests" >&2
  exit 1
else
  echo "scripts/test.sh: node/npm not found; the interop tests will be skipped" >&2
fi

# Real components some tests start: Debian's chromium and chromium-driver (the
# demo page in a headless browser) and redis-server (the Redis backplane). In
# CI, as root, install whichever is missing; elsewhere those tests skip with a
# clear message.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${CI:-}" = "true" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "scripts/test.sh: ${missing[*]} not found; the tests that need them will be skipped" >&2
  fi
fi

echo "== ruff"
.venv/bin/ruff check beryl tests bench docs twisted
.venv/bin/ruff format --check beryl tests bench docs twisted

echo "== mypy --strict beryl tests bench"
.venv/bin/mypy --strict

echo "== API reference (pydoctor, warnings are errors), changelog fragments"
BERYL_PYTHON=.venv/bin/python bash scripts/docs.sh
.venv/bin/towncrier build --draft --version next >/dev/null

echo "== python -m build, twine check"
dist=$(mktemp -d)
trap 'rm -rf "$dist"' EXIT
.venv/bin/python -m build --outdir "$dist" . >"$dist/build.log" 2>&1 || {
  cat "$dist/build.log" >&2
  exit 1
}
.venv/bin/twine check --strict "$dist"/*.tar.gz "$dist"/*.whl
# tests.integration.test_packaging reads the sdist built here.
export BERYL_DIST_DIR="$dist"

echo "== trial tests"
log="$dist/trial.log"
set +e
# One trial directory per checkout, so that checkouts can test at once.
trial_temp="${TMPDIR:-/tmp}/beryl_trial_temp_$(pwd | cksum | cut -d' ' -f1)"
.venv/bin/python -m twisted.trial --temp-directory="$trial_temp" "${@:-tests}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# A plain closing line: N passed, N failed, N skipped.
.venv/bin/python - "$log" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
line = re.findall(r"^(PASSED|FAILED) \((.*)\)$", text, re.M)
counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", line[-1][1])) if line else {}
failed = counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
print(f"tests: {counts.get('successes', 0)} passed, {failed} failed, {counts.get('skips', 0)} skipped")
PY
exit "$status"

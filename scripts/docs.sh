#!/usr/bin/env bash
# Build the API reference from the epytext docstrings with pydoctor into
# build/apidocs/.  Any warning (a broken L{link}, bad epytext) fails the build.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${BERYL_PYTHON:-.venv/bin/python}
"$python" -m pydoctor \
  --quiet --warnings-as-errors \
  --project-name=Beryl \
  --docformat=epytext \
  --html-output=build/apidocs \
  beryl
echo "API reference: build/apidocs/index.html"

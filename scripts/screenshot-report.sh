#!/usr/bin/env bash
# Render `plasticd report` from a real 60k-sample Fashion-MNIST run and photograph the page in a real
# headless browser (Debian's chromium), to check what a reader sees: docs/report-screenshot.png is made so.
#
#   scripts/screenshot-report.sh [OUT.png]        (default docs/report-screenshot.png)
#
# Needs .venv (./setup.sh) and chromium (`apt-get install -y chromium`). The run takes a few minutes on
# two CPU cores; it happens in a temporary folder with log.file set, so the report has every source.
# Extra settings for the run can be passed in PLASTICD_RUN_ARGS (e.g. "--set growth.enabled=true").
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-docs/report-screenshot.png}")"
repo="$PWD"
command -v chromium >/dev/null || { echo "screenshot-report.sh: chromium is not installed (apt-get install -y chromium)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
# shellcheck disable=SC2086  # PLASTICD_RUN_ARGS is a list of words
"$repo/.venv/bin/plasticd" run --source fashion-mnist --set log.file="$work/plasticd.log" --log-format json \
    ${PLASTICD_RUN_ARGS:-} 2>/dev/null
"$repo/.venv/bin/plasticd" report --out "$work/report" --set log.file="$work/plasticd.log"
# --window-size: the page is 1100 CSS pixels wide; 3000 high holds the table and all six figures.
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,3000 \
    --screenshot="$out" "file://$work/report/index.html" 2>/dev/null
echo "screenshot-report.sh: $out ($(stat -c %s "$out") bytes)"

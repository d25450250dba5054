#!/usr/bin/env bash
# Render a report's HTML to a PNG with headless Chromium (Debian: apt-get install chromium).
#
#   scripts/screenshot_report.sh runs/bible-es-en/report/report.html docs/report-screenshot.png [WIDTH] [HEIGHT]
#
# The page is self-contained, so Chromium needs no network: every network feature is switched off.
set -euo pipefail
html=${1:?usage: $0 REPORT.html OUT.png [WIDTH] [HEIGHT]}
png=${2:?usage: $0 REPORT.html OUT.png [WIDTH] [HEIGHT]}
width=${3:-1280}
height=${4:-2400}
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [[ -z "$browser" ]]; then
    echo "error: no chromium found (apt-get install chromium, or set CHROMIUM=/path/to/browser)" >&2
    exit 1
fi
[[ -f "$html" ]] || { echo "error: no such file: $html" >&2; exit 1; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
mkdir -p "$(dirname "$png")"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" --window-size="$width,$height" \
    --screenshot="$(realpath -m "$png")" "file://$(realpath "$html")" >/dev/null 2>&1
[[ -s "$png" ]] || { echo "error: chromium wrote no screenshot to $png" >&2; exit 1; }
echo "$png"

#!/usr/bin/env bash
# check-report.sh REPORT.html [OUT.png]
#
# Renders a ringload HTML report in headless Chromium and checks that it really rendered:
#   1. a screenshot (default: REPORT.png) is written and is a PNG of real size (a blank or
#      error page is a few kB);
#   2. the DOM after load (--dump-dom) still holds the report: the <svg> charts, their
#      <polyline>/<circle> data, and the embedded JSON.
# The page needs no network (everything is inline); Chromium runs with every background
# network feature off anyway. Run as root: --no-sandbox is needed there.
#
# Exit status: 0 rendered; 1 failed to render; 77 Chromium not installed (install it with
# `apt-get install -y chromium`), which the test suite reports as "skipped".
set -euo pipefail

report=${1:?usage: check-report.sh REPORT.html [OUT.png]}
[ -f "$report" ] || { echo "check-report: no such file: $report" >&2; exit 1; }
report=$(realpath "$report")
out=${2:-${report%.html}.png}

chromium=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$chromium" ]; then
  echo "check-report: chromium not found (apt-get install -y chromium)" >&2
  exit 77
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --disable-background-networking
       --disable-component-update --disable-sync --no-first-run --disable-default-apps
       --disable-extensions --user-data-dir="$profile" --window-size=1000,2600
       --virtual-time-budget=3000)

rm -f "$out"
if ! timeout 90 "$chromium" "${flags[@]}" --screenshot="$out" "file://$report" >"$profile/shot.log" 2>&1; then
  echo "check-report: chromium failed to take the screenshot:" >&2
  cat "$profile/shot.log" >&2
  exit 1
fi
if [ ! -s "$out" ] || [ "$(head -c 8 "$out" | od -An -tx1 | tr -d ' \n')" != "89504e470d0a1a0a" ]; then
  echo "check-report: no PNG screenshot at $out" >&2
  cat "$profile/shot.log" >&2
  exit 1
fi
size=$(stat -c %s "$out")
if [ "$size" -lt 20000 ]; then
  echo "check-report: the screenshot is only $size bytes: a blank or error page?" >&2
  exit 1
fi

dom=$(timeout 90 "$chromium" "${flags[@]}" --dump-dom "file://$report" 2>"$profile/dom.log") || {
  echo "check-report: chromium failed to dump the DOM:" >&2
  cat "$profile/dom.log" >&2
  exit 1
}
svgs=$(grep -o '<svg' <<<"$dom" | wc -l)
lines=$(grep -o '<polyline' <<<"$dom" | wc -l)
if [ "$svgs" -lt 1 ] || [ "$lines" -lt 1 ] || ! grep -q 'id="ringload-data"' <<<"$dom"; then
  echo "check-report: the rendered DOM lacks the charts ($svgs svg, $lines polylines) or the data" >&2
  exit 1
fi
echo "check-report: OK: $out ($size bytes); $svgs charts, $lines lines in the rendered DOM"

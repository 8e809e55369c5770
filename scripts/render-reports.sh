#!/usr/bin/env bash
# Render ares run reports (report.html) to PNG with headless Chromium, so a reader can look at
# them without a browser. On demand, not part of CI.
#
#   scripts/render-reports.sh RUN_DIR|report.html ...
#
# For each report: Chromium prints it to report.pdf (as a reader would print it: A4, the page's
# print styles), and pdftoppm turns each page into report-N.png beside it. Needs Debian's
# `chromium` and `poppler-utils` packages (installed with apt-get when missing, as root).
# Environment: DPI (PNG resolution, default 100), CHROMIUM (binary, default chromium).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 RUN_DIR|report.html ..." >&2; exit 2; }
CHROMIUM=${CHROMIUM:-chromium}
DPI=${DPI:-100}
need() { # COMMAND PACKAGE
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
  else
    echo "no $1: install Debian's $2 package" >&2; exit 1
  fi
}
need "$CHROMIUM" chromium
need pdftoppm poppler-utils
for arg in "$@"; do
  if [ -d "$arg" ]; then html=$arg/report.html; else html=$arg; fi
  [ -f "$html" ] || { echo "no report: $html (run ares report DIR first)" >&2; exit 1; }
  abs=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
  base=${abs%.html}
  rm -f "$base".pdf "$base"-*.png
  # --no-sandbox: Chromium refuses to run as root otherwise; the page is a local file with no
  # script, and the network is not needed (nothing is fetched).
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run --disable-extensions \
    --disable-background-networking --no-pdf-header-footer --print-to-pdf="$base.pdf" \
    "file://$abs" >/dev/null 2>&1
  pdftoppm -png -r "$DPI" "$base.pdf" "$base"
  echo "$base.pdf: $(ls "$base"-*.png | wc -l) pages -> $base-N.png"
done

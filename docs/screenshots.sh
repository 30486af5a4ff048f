#!/usr/bin/env bash
# Re-take the report screenshots under docs/img/ (README and docs/report.md) from the real
# Douban leaderboard: renders the report from the published bundles (leaderboard/douban; the
# Douban files must be where specs/douban.toml looks for them) and photographs it with headless
# Chromium (Debian: apt-get install chromium). Keep each PNG under 300 KB.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/douban_report}
CHROMIUM=${CHROMIUM:-$(command -v chromium || echo /usr/bin/chromium)}
.venv/bin/harness report specs/douban.toml --out "$OUT"
REPORT="$OUT/report"

shot() {  # shot PNG HTML HEIGHT [SECTION-ID]: the page, or the page from that <h2 id> on
  local png=$1 page=$2 height=$3 section=${4:-}
  local src="$REPORT/$page"
  if [ -n "$section" ]; then  # drop everything before the section (no scrolling in --screenshot)
    src="$REPORT/_shot_$section.html"
    sed "s#</body>#<script>const t=document.getElementById('$section');let n=t.previousElementSibling;while(n){const p=n.previousElementSibling;n.remove();n=p;}</script></body>#" \
      "$REPORT/$page" >"$src"
  fi
  timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --no-first-run --hide-scrollbars \
    --screenshot="docs/img/$png" --window-size="1400,$height" "file://$src" 2>/dev/null
  if [ -n "$section" ]; then rm -f "$src"; fi
  echo "docs/img/$png: $(stat -c %s "docs/img/$png") bytes"
}

shot report-leaderboard.png index.html 1000
shot report-dataset.png dataset-douban.html 1000
shot report-sparse.png dataset-douban.html 1000 sparse
shot report-temperatures.png dataset-douban.html 800 temperatures
shot report-agreement.png dataset-douban.html 1000 agreement

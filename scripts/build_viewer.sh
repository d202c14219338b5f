#!/usr/bin/env bash
# Rebuild the web viewer's committed bundle, src/spanprof/viewer/static/
# (index.html, bundle.js, bundle.css, BUILD_INFO), from the sources in viewer/.
# Needs Node >= 18 and npm; installs exactly what viewer/package-lock.json pins.
# Commit the result: installing spanprof never needs Node.
#
#   scripts/build_viewer.sh [OUT_DIR]     (default: src/spanprof/viewer/static)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/src/spanprof/viewer/static}"

cd "$root/viewer"
# --ignore-scripts: esbuild runs without its optional postinstall step.
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
node build.mjs "$out"

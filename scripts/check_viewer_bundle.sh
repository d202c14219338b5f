#!/usr/bin/env bash
# Fail if the committed viewer bundle (src/spanprof/viewer/static/) is not
# exactly what the sources in viewer/ build to. Builds from a clean copy of the
# sources in a temporary directory (npm ci from package-lock.json), so neither
# viewer/node_modules nor the committed files are touched.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
committed="$root/src/spanprof/viewer/static"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/viewer"
cp -R "$root/viewer/src" "$root/viewer/build.mjs" "$root/viewer/package.json" \
    "$root/viewer/package-lock.json" "$tmp/viewer/"
(
    cd "$tmp/viewer"
    npm ci --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error
    node build.mjs "$tmp/static" >/dev/null
)

if ! diff -r "$tmp/static" "$committed" >"$tmp/diff.txt"; then
    echo "check_viewer_bundle: the committed bundle differs from a fresh build of viewer/:" >&2
    head -c 4000 "$tmp/diff.txt" | cut -c1-200 >&2
    echo >&2
    echo "Run scripts/build_viewer.sh and commit src/spanprof/viewer/static/." >&2
    exit 1
fi
echo "check_viewer_bundle: src/spanprof/viewer/static matches viewer/ ($(grep '^sources ' "$committed/BUILD_INFO"))"

#!/usr/bin/env bash
# The test command: ./scripts/test.sh [pytest args...]
#
# For each supported CPython (3.10-3.13) found under ~/.pyenv/versions/ (newest
# patch of each minor), it creates or reuses the venv .venv/py3.X, installs the
# project into it for real (not editable: this compiles spanprof._sampler
# against that Python) and runs pytest from the repo root against the
# installed package. Then ruff checks src, tests and benchmarks once.
#
#   ./scripts/test.sh                        # every version found
#   ./scripts/test.sh -k sampler             # extra args go to pytest
#   SPANPROF_PYTHONS="3.11 3.13" ./scripts/test.sh
#   SPANPROF_SETUP_ONLY=1 ./scripts/test.sh  # only create/update the venvs
#
# Exits non-zero if any install, pytest run or ruff check failed, if no
# supported Python was found, or if no version collected any test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUPPORTED=(3.10 3.11 3.12 3.13)
PYENV_VERSIONS="${PYENV_ROOT:-$HOME/.pyenv}/versions"
read -r -a WANTED <<<"${SPANPROF_PYTHONS:-${SUPPORTED[*]}}"
LINT_MINOR=3.11

# Tests must import the installed package, never src/ (nor anything else).
unset PYTHONPATH
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

start=$SECONDS
summary=()
failed=0
collected_any=0
lint_venv=""

# Newest patch release of a minor version under $PYENV_VERSIONS, or nothing.
find_python() {
    local minor="$1" dir
    dir="$(find "$PYENV_VERSIONS" -mindepth 1 -maxdepth 1 -regextype posix-extended \
        -regex ".*/${minor//./\\.}\.[0-9]+" -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)"
    if [[ -n "$dir" && -x "$PYENV_VERSIONS/$dir/bin/python3" ]]; then
        echo "$PYENV_VERSIONS/$dir/bin/python3"
    fi
}

full_version() {
    "$1" -c 'import platform; print(platform.python_version())'
}

# Create (or reuse, if it runs the same patch release) the venv; install the project.
setup_venv() {
    local base="$1" venv="$2"
    if [[ ! -x "$venv/bin/python" ]] ||
        [[ "$(full_version "$venv/bin/python" 2>/dev/null)" != "$(full_version "$base")" ]]; then
        rm -rf "$venv"
        "$base" -m venv "$venv" || return 1
        "$venv/bin/python" -m pip install -q --upgrade pip || return 1
    fi
    "$venv/bin/python" -m pip install -q ".[test]"
}

# Path of the spanprof package that pytest (run from $ROOT) would import.
imported_from() {
    "$1" -c 'import os, spanprof; print(os.path.dirname(spanprof.__file__))'
}

for minor in "${WANTED[@]}"; do
    if [[ ! " ${SUPPORTED[*]} " == *" $minor "* ]]; then
        echo "test.sh: $minor is not a supported version (${SUPPORTED[*]})" >&2
        exit 2
    fi
done

found=()
for minor in "${WANTED[@]}"; do
    base="$(find_python "$minor")"
    if [[ -n "$base" ]]; then
        found+=("$minor")
    else
        summary+=("py$minor: not found under $PYENV_VERSIONS")
    fi
done
if [[ ${#found[@]} -eq 0 ]]; then
    echo "test.sh: FAIL: none of ${WANTED[*]} is installed under $PYENV_VERSIONS" >&2
    exit 1
fi
if [[ ${#found[@]} -lt ${#SUPPORTED[@]} ]]; then
    echo "test.sh: testing ${#found[@]} of ${#SUPPORTED[@]} supported versions: ${found[*]}"
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

for minor in "${found[@]}"; do
    base="$(find_python "$minor")"
    venv="$ROOT/.venv/py$minor"
    label="py$minor ($(full_version "$base"))"
    echo "=== $label: installing into .venv/py$minor"
    t0=$SECONDS
    if ! setup_venv "$base" "$venv"; then
        summary+=("$label: FAIL: install failed")
        failed=1
        continue
    fi
    if [[ -z "$lint_venv" || "$minor" == "$LINT_MINOR" ]]; then
        lint_venv="$venv"
    fi
    if [[ -n "${SPANPROF_SETUP_ONLY:-}" ]]; then
        summary+=("$label: venv ready ($((SECONDS - t0)) s)")
        continue
    fi
    pkg="$(imported_from "$venv/bin/python" || true)"
    if [[ "$pkg" != "$venv"/lib/*/site-packages/spanprof ]]; then
        summary+=("$label: FAIL: tests would import spanprof from ${pkg:-nowhere}")
        failed=1
        continue
    fi
    echo "=== $label: pytest"
    rc=0
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$log" || rc=$?
    result="$(grep -E '^=* *[0-9]+ [a-z]+.* in [0-9.]+s' "$log" | tail -n 1 | tr -d '=' |
        sed -e 's/^ *//' -e 's/ *$//' || true)"
    case "$rc" in
        0)
            summary+=("$label: ok: ${result:-pytest exit 0} ($((SECONDS - t0)) s)")
            collected_any=1
            ;;
        5)
            echo "=== $label: pytest collected no tests"
            summary+=("$label: no tests collected ($((SECONDS - t0)) s)")
            ;;
        *)
            summary+=("$label: FAIL (pytest exit $rc): ${result:-see output above}")
            collected_any=1
            failed=1
            ;;
    esac
done

if [[ -z "${SPANPROF_SETUP_ONLY:-}" && -z "$lint_venv" ]]; then
    summary+=("ruff: not run: no venv could be set up")
    failed=1
elif [[ -z "${SPANPROF_SETUP_ONLY:-}" ]]; then
    if [[ "$lint_venv" != */py$LINT_MINOR ]]; then
        echo "test.sh: py$LINT_MINOR not set up; running ruff from ${lint_venv#"$ROOT"/}"
    fi
    echo "=== ruff"
    lint_rc=0 format_rc=0
    "$lint_venv/bin/ruff" check src tests benchmarks || lint_rc=$?
    "$lint_venv/bin/ruff" format --check src tests benchmarks || format_rc=$?
    if [[ $lint_rc -eq 0 && $format_rc -eq 0 ]]; then
        summary+=("ruff: ok")
    else
        summary+=("ruff: FAIL (check exit $lint_rc, format --check exit $format_rc)")
        failed=1
    fi
    if [[ $collected_any -eq 0 ]]; then
        summary+=("FAIL: no version collected any test")
        failed=1
    fi
fi

echo
echo "=== summary ($((SECONDS - start)) s)"
printf '%s\n' "${summary[@]}"
exit $failed

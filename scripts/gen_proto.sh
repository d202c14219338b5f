#!/usr/bin/env bash
# Regenerate src/spanprof/_proto/profile_pb2.py from profile.proto.
#
# Uses the protoc bundled in grpcio-tools (python -m grpc_tools.protoc), pinned
# to 1.62.3: its protobuf 4.25 gencode has no runtime-version check, so the one
# generated file loads under every protobuf runtime from 4.25 to 7.x.
#
#   PYTHON=/path/to/python scripts/gen_proto.sh          # regenerate in place
#   PYTHON=/path/to/python scripts/gen_proto.sh --check  # fail if out of date
#
# PYTHON must have grpcio-tools==1.62.3 installed (a scratch venv is fine:
# python -m venv /tmp/protovenv && /tmp/protovenv/bin/pip install grpcio-tools==1.62.3).
set -euo pipefail

GRPCIO_TOOLS_VERSION="1.62.3"
PYTHON="${PYTHON:-python}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTO="spanprof/_proto/profile.proto"
OUT="$ROOT/src/spanprof/_proto/profile_pb2.py"

have="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)"
if [[ "$have" != "$GRPCIO_TOOLS_VERSION" ]]; then
    echo "gen_proto.sh: need grpcio-tools==$GRPCIO_TOOLS_VERSION in $PYTHON (found: ${have:-none})" >&2
    exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Run from src/ so the descriptor is registered as "spanprof/_proto/profile.proto",
# matching the module's import path.
(cd "$ROOT/src" && "$PYTHON" -m grpc_tools.protoc -I. --python_out="$tmp" "$PROTO")
generated="$tmp/spanprof/_proto/profile_pb2.py"

if [[ "${1:-}" == "--check" ]]; then
    if ! cmp -s "$generated" "$OUT"; then
        echo "gen_proto.sh: $OUT is out of date; run scripts/gen_proto.sh" >&2
        exit 1
    fi
    echo "profile_pb2.py is up to date"
else
    cp "$generated" "$OUT"
    echo "wrote $OUT"
fi

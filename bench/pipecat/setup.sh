#!/usr/bin/env bash
# Creates .venv-pipecat/ (the pipecat peer relay's own virtualenv, see requirements.txt for why
# it is separate from .venv/) and generates the npcd.v1 gRPC stubs into .venv-pipecat/gen/.
#
#   bash bench/pipecat/setup.sh        # from any directory; a second run does nothing
#
# Idempotent: the install is stamped with a hash of requirements.txt and the stubs with a hash
# of the proto, so only what changed is redone. PYTHON=... picks the interpreter (3.11+).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$ROOT/.venv-pipecat"
GEN="$VENV/gen"
REQS="$HERE/requirements.txt"
PROTO_DIR="$ROOT/proto"
PROTO="$PROTO_DIR/npcd/v1/npcd.proto"
PYTHON="${PYTHON:-python3}"

die() { echo "bench/pipecat/setup.sh: $*" >&2; exit 1; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

[ -f "$REQS" ] || die "missing $REQS"
[ -f "$PROTO" ] || die "missing $PROTO"

install_stamp="$VENV/.pipecat-install-stamp"
gen_stamp="$GEN/.stamp"
want_install="$(digest "$REQS")"
want_gen="$(digest "$PROTO" "$REQS")"

if [ "$(cat "$install_stamp" 2>/dev/null)" != "$want_install" ]; then
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null \
        || die "needs Python 3.11 or newer as '$PYTHON' (set PYTHON=...)"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV"
        "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv' failed (on Debian: apt-get install python3-venv)"
    fi
    rm -f "$install_stamp" "$gen_stamp"
    echo "installing pinned packages from bench/pipecat/requirements.txt (about 500 MB, ~20 s)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" \
        || die "pip install failed (is PyPI reachable? a partial install stays in $VENV; rerun to retry)"
    "$VENV/bin/python" -m pip check >/dev/null \
        || die "pip check reports broken requirements in $VENV: $("$VENV/bin/python" -m pip check | head -5)"
    echo "$want_install" > "$install_stamp"
fi

if [ "$(cat "$gen_stamp" 2>/dev/null)" != "$want_gen" ]; then
    echo "generating npcd.v1 stubs into $GEN"
    rm -rf "$GEN"
    mkdir -p "$GEN"
    "$VENV/bin/python" -m grpc_tools.protoc -I "$PROTO_DIR" \
        --python_out="$GEN" --grpc_python_out="$GEN" "$PROTO" \
        || die "grpc_tools.protoc failed on $PROTO"
    # Regular packages (not namespace ones): a namespace `npcd` would lose to the repository's own
    # `npcd` package if the repo root were ever on sys.path too.
    touch "$GEN/npcd/__init__.py" "$GEN/npcd/v1/__init__.py"
    # Check from a neutral directory, with only gen/ added, that the stubs import.
    (cd / && LOGURU_LEVEL=WARNING "$VENV/bin/python" -I -c "
import sys; sys.path.insert(0, '$GEN')
from npcd.v1 import npcd_pb2, npcd_pb2_grpc
assert npcd_pb2.__file__.startswith('$GEN'), npcd_pb2.__file__
import pipecat.services.openai.realtime.llm, pipecat.pipeline.worker
") || die "the generated stubs or pipecat do not import in $VENV"
    echo "$want_gen" > "$gen_stamp"
fi
echo "pipecat relay ready: $VENV/bin/python $HERE/relay.py --listen 127.0.0.1:PORT --backend ws://127.0.0.1:PORT/v1/realtime"

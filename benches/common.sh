# Shared by the bench scripts: a temp dir, daemons on 127.0.0.1, status counters.
# Expects BIN (the meshsync binary) to be set by the caller.
W=$(mktemp -d /tmp/meshsync-fig.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; if [ -n "${KEEP_LOGS:-}" ]; then cp "$W"/*.log /tmp/ 2>/dev/null || true; fi; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
st() { "$BIN" --home "$W/$1" status --json; }
counter() { st "$1" | python3 -c "import json,sys;print(json.load(sys.stdin)['counters']['$2'])"; }
node() { # name inviter
  local L="127.0.0.1:$(port)"
  if [ -z "$2" ]; then "$BIN" --home "$W/$1" init --name "$1" --listen "$L" >/dev/null
  else "$BIN" --home "$W/$1" join "$("$BIN" --home "$W/$2" invite)" --name "$1" --listen "$L" >/dev/null; fi
  sed -i 's/rescan_interval_secs = 3600/rescan_interval_secs = 1/' "$W/$1/config.toml"
  "$BIN" --home "$W/$1" share add s "$W/$1-share" >/dev/null
  RUST_LOG=${RUST_LOG:-warn} "$BIN" --home "$W/$1" run 2>"$W/$1.log" & PIDS+=($!)
  sleep 0.5
}
same() { cmp -s "$W/a-share/$1" "$W/$2-share/$1"; }
waitfile() { until same "$1" b && same "$1" c; do sleep 0.05; done; }


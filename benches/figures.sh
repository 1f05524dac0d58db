#!/usr/bin/env bash
# Foundation figures: wire bytes for new/edit/rename on 3 nodes, and one 1 GiB file
# between 2 nodes (meshsync vs rsync -a --whole-file -e ssh to a local sshd), with
# the receiving daemon's peak RSS. Usage: benches/figures.sh [path/to/meshsync]
set -euo pipefail
BIN=${1:-target/release/meshsync}
W=$(mktemp -d /tmp/meshsync-fig.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
st() { "$BIN" --home "$W/$1" status --json; }
counter() { st "$1" | python3 -c "import json,sys;print(json.load(sys.stdin)['counters']['$2'])"; }
node() { # name inviter
  local L="127.0.0.1:$(port)"
  if [ -z "$2" ]; then "$BIN" --home "$W/$1" init --name "$1" --listen "$L" >/dev/null
  else "$BIN" --home "$W/$1" join "$("$BIN" --home "$W/$2" invite)" --name "$1" --listen "$L" >/dev/null; fi
  sed -i 's/rescan_interval_secs = 5/rescan_interval_secs = 1/' "$W/$1/config.toml"
  "$BIN" --home "$W/$1" share add s "$W/$1-share" >/dev/null
  RUST_LOG=warn "$BIN" --home "$W/$1" run 2>"$W/$1.log" & PIDS+=($!)
  sleep 0.5
}
same() { cmp -s "$W/a-share/$1" "$W/$2-share/$1"; }
waitfile() { until same "$1" b && same "$1" c; do sleep 0.05; done; }

node a ""; node b a; node c b
sleep 2
head -c $((100<<20)) /dev/urandom > "$W/a-share/big.bin"
t0=$(date +%s.%N); waitfile big.bin; t1=$(date +%s.%N)
s1=$(counter a chunk_bytes_sent); s1b=$(counter b chunk_bytes_sent); s1c=$(counter c chunk_bytes_sent)
echo "new 100 MiB file -> 2 peers: chunk bytes sent a=$s1 b=$s1b c=$s1c (total $((s1+s1b+s1c))) in $(python3 -c "print(round($t1-$t0,2))") s"
python3 - "$W/a-share/big.bin" <<'PY'
import os,sys
p=sys.argv[1]; d=open(p,'rb').read(); m=len(d)//2
open(p+'.new','wb').write(d[:m]+os.urandom(1<<20)+d[m:]); os.replace(p+'.new',p)
PY
waitfile big.bin
s2=$(( $(counter a chunk_bytes_sent)+$(counter b chunk_bytes_sent)+$(counter c chunk_bytes_sent) ))
echo "1 MiB inserted in the middle: chunk bytes sent $((s2-s1-s1b-s1c))"
mv "$W/a-share/big.bin" "$W/a-share/renamed.bin"
until same renamed.bin b && same renamed.bin c && [ ! -e "$W/b-share/big.bin" ] && [ ! -e "$W/c-share/big.bin" ]; do sleep 0.05; done
s3=$(( $(counter a chunk_bytes_sent)+$(counter b chunk_bytes_sent)+$(counter c chunk_bytes_sent) ))
echo "rename: chunk bytes sent $((s3-s2))"
for p in "${PIDS[@]}"; do kill -TERM "$p"; done; wait 2>/dev/null || true; PIDS=()
rm -rf "$W"/*

# 1 GiB between two nodes.
node a ""; node b a; sleep 2
head -c $((1<<30)) /dev/urandom > "$W/src.bin"
BPID=${PIDS[1]}
cp "$W/src.bin" "$W/a-share/.g.tmp"; sync
t0=$(date +%s.%N); mv "$W/a-share/.g.tmp" "$W/a-share/g.bin"
until cmp -s "$W/src.bin" "$W/b-share/g.bin" 2>/dev/null; do sleep 0.05; done
t1=$(date +%s.%N)
echo "1 GiB a->b meshsync: $(python3 -c "print(round($t1-$t0,2))") s (from rename on a to verified on b, includes scan+hash on a)"
echo "peak RSS of receiving daemon: $(grep VmHWM /proc/$BPID/status | awk '{print $2/1024 " MiB"}')"
if command -v rsync >/dev/null && command -v sshd >/dev/null; then
  mkdir -p /run/sshd "$W/ssh" && ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/id" && ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/host"
  cat "$W/ssh/id.pub" > "$W/ssh/auth"
  SP=$(port)
  /usr/sbin/sshd -f /dev/null -p "$SP" -o ListenAddress=127.0.0.1 -o HostKey="$W/ssh/host" -o AuthorizedKeysFile="$W/ssh/auth" -o PermitRootLogin=yes -o StrictModes=no -o PidFile="$W/ssh/pid"
  mkdir -p "$W/rsync-dst"
  t0=$(date +%s.%N)
  rsync -a --whole-file -e "ssh -p $SP -i $W/ssh/id -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR" "$W/src.bin" "root@127.0.0.1:$W/rsync-dst/"
  t1=$(date +%s.%N)
  echo "1 GiB rsync -a --whole-file -e ssh: $(python3 -c "print(round($t1-$t0,2))") s"
  kill "$(cat "$W/ssh/pid")"
else
  echo "rsync/sshd not installed: apt-get install rsync openssh-server for the comparison"
fi

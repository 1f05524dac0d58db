#!/usr/bin/env bash
# One file between two nodes on 127.0.0.1 (unshaped): meshsync vs
# rsync -a --whole-file -e ssh to a local sshd, in the same run, with the receiving
# daemon's peak RSS. The clock starts at the rename into the share, followed by
# `meshsync rescan` (what an upload job would run), and stops when the file appears
# under its name on b: meshsync renames a download into place only after every
# chunk is verified and the file fsynced (rsync, like rsync's own clock, stops when
# it exits, without fsync). Both copies are then compared byte for byte, off the
# clock. Usage: benches/loopback.sh [path/to/meshsync] [size MiB, 1024]
set -euo pipefail
BIN=${1:-target/release/meshsync}
MIB=${2:-1024}
source "$(dirname "$0")/common.sh"

node a ""; node b a; sleep 2
head -c $((MIB<<20)) /dev/urandom > "$W/src.bin"
BPID=${PIDS[1]}
cp "$W/src.bin" "$W/a-share/.g.tmp"; sync
t0=$(date +%s.%N); mv "$W/a-share/.g.tmp" "$W/a-share/g.bin"; "$BIN" --home "$W/a" rescan >/dev/null
until [ -e "$W/b-share/g.bin" ]; do sleep 0.01; done
t1=$(date +%s.%N)
cmp "$W/src.bin" "$W/b-share/g.bin" || { echo "meshsync copy differs from the source" >&2; exit 1; }
echo "$MIB MiB a->b meshsync: $(python3 -c "print(round($t1-$t0,2))") s (rename + rescan on a to verified, fsynced copy on b; includes chunking+hashing on a)"
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
  cmp "$W/src.bin" "$W/rsync-dst/src.bin" || { echo "rsync copy differs from the source" >&2; exit 1; }
  echo "$MIB MiB rsync -a --whole-file -e ssh: $(python3 -c "print(round($t1-$t0,2))") s"
  kill "$(cat "$W/ssh/pid")"
else
  echo "rsync/sshd not installed: apt-get install rsync openssh-server for the comparison"
fi

#!/usr/bin/env bash
# Foundation figures: wire bytes for new/edit/rename on 3 nodes, and (in
# benches/loopback.sh) one 1 GiB file between 2 nodes against rsync. Usage: benches/figures.sh [path/to/meshsync]
set -euo pipefail
BIN=${1:-target/release/meshsync}
source "$(dirname "$0")/common.sh"

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
echo "1 GiB between two nodes vs rsync: benches/loopback.sh"

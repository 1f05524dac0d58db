#!/usr/bin/env python3
"""Buckets perf samples by what their stack shows, as shares of busy CPU.

perf record -a -g -F 499 -o perf.data -- sleep 24     # beside a lab run
perf script -i perf.data | benches/perf_buckets.py [COMM ...]

A sample goes to the first bucket whose keys appear anywhere in its stack, so the
order below is the priority (a memcpy under quinn counts as quinn)."""
import sys, collections
buckets = [
    ("idle", ["pv_native_safe_halt", "cpuidle_enter", "do_idle"]),
    ("net rx softirq", ["net_rx_action", "__napi_poll"]),
    ("udp send syscall", ["udp_sendmsg", "__sys_sendmsg", "__libc_sendmsg"]),
    ("udp recv syscall", ["recvmmsg", "udp_recvmsg", "___sys_recvmsg"]),
    ("epoll", ["epoll_wait"]),
    ("futex/wake", ["futex", "try_to_wake_up"]),
    ("file write", ["pwrite", "__GI___libc_write", "ksys_write", "vfs_write"]),
    ("file read", ["pread", "filemap_read"]),
    ("aes-gcm", ["aes_gcm", "gcm_ghash", "aes_hw_ctr32"]),
    ("blake3", ["blake3"]),
    ("zstd", ["ZSTD", "zstd"]),
    ("quinn", ["quinn"]),
    ("memcpy/alloc", ["memmove", "memcpy", "malloc", "_int_free", "cfree", "unlink_chunk", "realloc"]),
    ("tokio", ["tokio::"]),
    ("sled/index", ["sled"]),
    ("meshsync", ["meshsync::"]),
    ("kernel other", ["[kernel"]),
]
counts = collections.Counter(); total = 0
comms = set(sys.argv[1:])
stack = []; comm = None
def flush():
    global total
    if comm is None: return
    if comms and comm not in comms: return
    total += 1
    text = "\n".join(stack)
    for name, keys in buckets:
        if any(k in text for k in keys):
            counts[name] += 1; return
    counts["other"] += 1
for line in sys.stdin:
    if not line.strip():
        flush(); stack = []; comm = None; continue
    if not line.startswith((" ", "\t")):
        comm = line.split()[0]
    else:
        stack.append(line.strip())
flush()
busy = total - counts["idle"]
print(f"samples {total}, busy {busy}")
for name, c in counts.most_common():
    if name == "idle": continue
    print(f"{name:20s} {100*c/busy:5.1f} % of busy")

#!/bin/sh
# Used by docs/PERFORMANCE.md ("Scan on two threads") for the scan after a start.
# coldscan.sh BIN DATA_DIR [REPS] [PATH] : for each rep, drops DATA_DIR/scimbridge.redb
# from the OS page cache (posix_fadvise DONTNEED) and runs benches/cpu.sh with PATH
# (default `/Users?filter=title co "Engineer"&count=100`) on a fresh server (run1: cold,
# run2: warm), then on a second fresh server with the file in the OS cache (run1, run2).
# SCIMBRIDGE_CONFIG passes through (e.g. `[limits] heavy_slots = 1` for one thread).
BIN=$1; D=$2; N=${3:-2}
HERE=$(dirname "$0")
P=${4:-'/Users?filter=title%20co%20%22Engineer%22&count=100'}
drop() {
  python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$1"
}
for i in $(seq 1 "$N"); do
  drop "$D/scimbridge.redb"
  echo "rep $i: file dropped from the OS cache, load $(cut -d' ' -f1 /proc/loadavg)"
  "$HERE/cpu.sh" "$BIN" "$D" "$P"
  echo "rep $i: fresh server, file in the OS cache, load $(cut -d' ' -f1 /proc/loadavg)"
  "$HERE/cpu.sh" "$BIN" "$D" "$P"
done

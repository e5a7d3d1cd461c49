#!/bin/sh
# Used by docs/PERFORMANCE.md for the export line.
# export.sh BIN DATA_DIR OUT [CACHE_MB] : starts BIN serve on DATA_DIR (with
# storage.cache_mb = CACHE_MB when given), then runs `BIN export --out OUT` twice
# and prints every 0.5 s: seconds since the start, the size of OUT.partial (the
# CLI checks each line as it writes it there) and of OUT (renamed once complete,
# verified and synced), the server's RSS (MB) and CPU seconds, and the export
# CLI's CPU seconds.
BIN=$1; D=$2; OUT=$3; CACHE=${4:-}
CFG=""
if [ -n "$CACHE" ]; then
  CFG=$(mktemp); printf '[storage]\ncache_mb = %s\n' "$CACHE" > "$CFG"; set -- --config "$CFG"
else
  set --
fi
LOG=$(mktemp)
SCIMBRIDGE_LOG=warn,scimbridge::cli=info,scimbridge::server=info $BIN --data-dir $D "$@" serve --listen 127.0.0.1:0 2>$LOG &
PID=$!
for i in $(seq 1 600); do grep -q "identity provider: " $LOG && break; sleep 0.1; done
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$1/stat 2>/dev/null || echo 0; }
for run in 1 2; do
  t0=$(date +%s.%N); c0=$(cpu $PID)
  $BIN --data-dir $D "$@" export --out $OUT 2>/dev/null &
  E=$!
  while kill -0 $E 2>/dev/null; do
    echo "run$run t=$(echo "$(date +%s.%N)-$t0" | bc | cut -c1-5) s partial=$(stat -c %s ${OUT%.*}.partial 2>/dev/null || echo -) file=$(stat -c %s $OUT 2>/dev/null || echo -) rss=$(awk '/VmRSS/{print int($2/1024)}' /proc/$PID/status) MB server_cpu=$(echo "($(cpu $PID)-$c0)/$TCK" | bc -l | cut -c1-5) s cli_cpu=$(echo "$(cpu $E)/$TCK" | bc -l | cut -c1-5) s"
    sleep 0.5
  done
  wait $E; echo "run$run exit $? total $(echo "$(date +%s.%N)-$t0" | bc | cut -c1-5) s"
  rm -f $OUT
done
kill -TERM $PID; wait $PID 2>/dev/null; rm -f $LOG $CFG

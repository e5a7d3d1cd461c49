#!/bin/sh
# Used by docs/PERFORMANCE.md for the server CPU seconds of a request.
# cpu.sh BIN DATA_DIR PATH... : starts BIN serve on DATA_DIR, GETs each PATH twice,
# printing wall seconds, server CPU seconds (utime+stime from /proc/PID/stat),
# RSS before/after, and the response size.
BIN=$1; D=$2; shift 2
TOKEN=$($BIN --data-dir $D token issue --name cpu-$$ 2>/dev/null | tail -1)
LOG=$(mktemp)
SCIMBRIDGE_LOG=warn,scimbridge::cli=info,scimbridge::server=info $BIN --data-dir $D serve --listen 127.0.0.1:0 2>$LOG &
PID=$!
for i in $(seq 1 600); do grep -q "identity provider: " $LOG && break; sleep 0.1; done
URL=$(grep -o "identity provider: .*" $LOG | head -1 | sed 's/identity provider: //')
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
rss() { awk '/VmRSS/{print $2}' /proc/$PID/status; }
TCK=$(getconf CLK_TCK)
for P in "$@"; do
  for n in 1 2; do
    c0=$(cpu); r0=$(rss)
    out=$(curl -sk -o /tmp/cpu_body.$$ -w '%{time_total} %{http_code} %{size_download}' -H "Authorization: Bearer $TOKEN" "$URL$P")
    c1=$(cpu); r1=$(rss)
    echo "$P run$n: wall/code/bytes $out cpu $(echo "($c1-$c0)/$TCK" | bc -l | cut -c1-6) s rss ${r0}->${r1} kB total=$(grep -o '"totalResults":[0-9]*' /tmp/cpu_body.$$)"
  done
done
kill -TERM $PID; wait $PID 2>/dev/null; rm -f $LOG /tmp/cpu_body.$$

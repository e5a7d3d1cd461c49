#!/bin/sh
# Used by docs/PERFORMANCE.md for before/after instruction counts of one request.
# callgrind.sh BIN DATA_DIR OUT PATH... : BIN serve under callgrind, instructions counted only
# while the PATHs are requested (each once); prints the instruction total.
BIN=$1; D=$2; OUT=$3; shift 3
TOKEN=$($BIN --data-dir $D token issue --name cg-$$ 2>/dev/null | tail -1)
LOG=$(mktemp)
SCIMBRIDGE_LOG=warn,scimbridge::cli=info,scimbridge::server=info valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUT $BIN --data-dir $D serve --listen 127.0.0.1:0 2>$LOG &
PID=$!
for i in $(seq 1 1200); do grep -q "identity provider: " $LOG && break; sleep 0.2; done
URL=$(grep -o "identity provider: .*" $LOG | head -1 | sed 's/identity provider: //')
curl -sk -o /dev/null -H "Authorization: Bearer $TOKEN" "$URL/Users?count=1"
callgrind_control -i on $PID >/dev/null
for P in "$@"; do
  curl -sk -o /tmp/cg_body.$$ -w "$P: %{http_code} %{size_download} B\n" -H "Authorization: Bearer $TOKEN" "$URL$P"
  grep -o '"totalResults":[0-9]*' /tmp/cg_body.$$
done
callgrind_control -i off $PID >/dev/null
kill -TERM $PID; wait $PID 2>/dev/null
grep -E "^(summary|totals):" $OUT
rm -f $LOG /tmp/cg_body.$$

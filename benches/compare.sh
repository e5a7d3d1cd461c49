#!/bin/sh
# Runs the load benchmark's scenarios against scimbridge and against the Python
# scim2-server from PyPI (an in-memory reference SCIM server) on this machine, and
# prints one table: ops/s and p99 of each, and scimbridge's ratio (ops/s ÷ ops/s,
# p99 ÷ p99). Both run with the same client, counts and time limits.
#
#   SCIM_CONFORMANCE_VENV=/root/.cache/scim-conformance benches/compare.sh [USERS] [SECONDS]
#
# scim2-server is plain HTTP on 127.0.0.1; scimbridge is measured over TLS, as it
# is deployed. Everything is bounded: USERS users (default 2000), SECONDS per
# measurement (default 5), a group of at most USERS members.
set -eu
USERS=${1:-2000}
SECS=${2:-5}
VENV=${SCIM_CONFORMANCE_VENV:-/root/.cache/scim-conformance}
SCENARIOS=read,lookup,patch,list,sort,scan,large-group,sync
cd "$(dirname "$0")/.."
OUT=$(mktemp -d)
trap 'kill $PY 2>/dev/null || true; rm -rf "$OUT"' EXIT INT TERM

# The build runs at the lowest CPU priority (other work on the machine may be
# building too); the two measured runs below run the harness binary directly, at
# the caller's priority.
LOAD=$(nice -n 19 cargo bench --bench load --no-run 2>&1 | sed -n 's/.*Executable.*(\(.*\))$/\1/p' | tail -1)
[ -x "$LOAD" ] || { echo "could not build the load benchmark" >&2; exit 1; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/scim2-server" --port "$PORT" --bearer-token compare-token >/dev/null 2>&1 &
PY=$!
i=0
until python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT),1)" 2>/dev/null; do
  i=$((i+1)); [ $i -lt 300 ] || { echo "scim2-server did not start" >&2; exit 1; }
  sleep 0.1
done

"$LOAD" --bench --scenarios $SCENARIOS --users "$USERS" --seconds "$SECS" \
  --group-size "$USERS" --base "http://127.0.0.1:$PORT" --token compare-token \
  --name scim2-server >"$OUT/py.txt" 2>"$OUT/py.err" || { cat "$OUT/py.err" >&2; exit 1; }
"$LOAD" --bench --scenarios $SCENARIOS --users "$USERS" --seconds "$SECS" \
  --group-size "$USERS" >"$OUT/sb.txt" 2>"$OUT/sb.err" || { cat "$OUT/sb.err" >&2; exit 1; }

echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/')"
# Rows are "name  ops  ops/s  p50  p99  p99.9  errors  hz"; names are up to column 52.
awk '
  function key(line) { return substr(line, 1, 52) }
  FNR == 1 { file++ }
  /^[a-z-]+: / {
    k = key($0); rest = substr($0, 53); n = split(rest, f, " ")
    if (file == 1) { py_rate[k] = f[2]; py_p99[k] = f[4]; py_err[k] = f[6] }
    else { order[++rows] = k; sb_rate[k] = f[2]; sb_p99[k] = f[4]; sb_err[k] = f[6] }
  }
  END {
    printf "%-52s %10s %10s %8s %10s %10s %8s\n", "measurement", "sb ops/s", "py ops/s", "ratio", "sb p99 ms", "py p99 ms", "ratio"
    for (i = 1; i <= rows; i++) {
      k = order[i]
      if (!(k in py_rate)) continue
      r1 = (py_rate[k] > 0) ? sprintf("%.1fx", sb_rate[k] / py_rate[k]) : "-"
      r2 = (py_p99[k] > 0) ? sprintf("%.2f", sb_p99[k] / py_p99[k]) : "-"
      printf "%-52s %10s %10s %8s %10s %10s %8s\n", k, sb_rate[k], py_rate[k], r1, sb_p99[k], py_p99[k], r2
    }
  }' "$OUT/py.txt" "$OUT/sb.txt"
echo
echo "# notes from the runs (scim2-server, then scimbridge):"
grep '^#' "$OUT/py.txt" "$OUT/sb.txt" | sed "s|$OUT/||"

#!/bin/sh
# Used by docs/PERFORMANCE.md for the load during each run: loadmon.sh > load.log &
# every 20 s: UTC time, loadavg, CPU share over the interval: user(nice 0) nice(niced) sys idle iowait, in %
prev=$(head -1 /proc/stat)
while true; do
  sleep 20
  cur=$(head -1 /proc/stat)
  echo "$prev|$cur" | awk -F'|' -v t="$(date -u +%H:%M:%S)" -v l="$(cut -d' ' -f1-3 /proc/loadavg)" '{
    split($1,a," "); split($2,b," "); tot=0; for(i=2;i<=9;i++){d[i]=b[i]-a[i]; tot+=d[i]}
    printf "%s load %s  user %.0f%% nice %.0f%% sys %.0f%% idle %.0f%% iowait %.0f%%\n", t, l, 100*d[2]/tot, 100*d[3]/tot, 100*d[4]/tot, 100*d[5]/tot, 100*d[6]/tot }'
  prev=$cur
done

#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and prints the executions per
# target (issue 11). The corpus grows in fuzz/corpus/<target> (kept between runs,
# not committed), starting from the committed seeds in fuzz/seeds/<target>. An input
# that crashes a target is copied to fuzz/regressions/<target>/ and the script fails:
# commit that file with the fix, and the replay test in the normal `cargo test`
# (tests/it/fuzz_replay.rs) runs it from then on.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# Needs cargo-fuzz (installed from crates.io when missing). On a stable toolchain,
# RUSTC_BOOTSTRAP=1 enables the unstable flags cargo-fuzz passes, so no nightly is
# needed. FUZZ_SANITIZER=address builds with AddressSanitizer (default: none; the
# code under test is safe Rust, where a panic is the finding, and the build is
# several times faster).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi
sanitizer=${FUZZ_SANITIZER:-none}

if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "== building ${#targets[@]} targets (sanitizer: $sanitizer)"
for t in "${targets[@]}"; do
  cargo fuzz build -O -s "$sanitizer" "$t" >/dev/null
done

mkdir -p logs
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  echo "== $t: $secs s"
  status=0
  cargo fuzz run -O -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    >"logs/$t.log" 2>&1 || status=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  corpus=$(find "corpus/$t" -type f | wc -l)
  summary+=("$(printf '%-10s %12s executions  %6s corpus files' "$t" "$execs" "$corpus")")
  if ((status != 0)); then
    failed+=("$t")
    mkdir -p "regressions/$t"
    for a in artifacts/"$t"/*; do
      [[ -f $a ]] && cp "$a" "regressions/$t/"
    done
    tail -n 40 "logs/$t.log"
  fi
done

echo "== summary ($secs s per target)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "crashes in: ${failed[*]} (inputs copied to fuzz/regressions/; logs in fuzz/logs/)"
  exit 1
fi

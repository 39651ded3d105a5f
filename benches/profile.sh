#!/usr/bin/env bash
# Function-level profile of one bridge scenario at its peak, with the harness's own load
# (docs/benchmarks-notes.md, issue 31). Needs perf (Debian: linux-perf) and inferno
# (cargo install inferno --locked); run after scripts/bench built the release binary and the
# harness. Usage: benches/profile.sh TAG SCENARIO BRIDGE_BINARY [CONCURRENCY]
set -euo pipefail
tag=$1 scen=$2 bin=$3 conc=${4:-64}
cd "$(dirname "$0")/.."
mkdir -p target/profile
: "${CALLBRIDGE_TEST_KAFKA:?run scripts/bench first or export it}"
before=$(pgrep -x callbridge | sort | tr '\n' ' ' || true)
cargo bench --locked --bench harness -- --bridge "$bin" --only "$scen" --concurrency "$conc" --duration 14 \
  --out target/profile/$tag.md --svg target/profile/$tag.plot.svg > target/profile/$tag.harness.log 2>&1 &
h=$!
pid=
for i in $(seq 1 600); do
  for p in $(pgrep -x callbridge || true); do
    case " $before " in *" $p "*) ;; *) pid=$p;; esac
  done
  [ -n "$pid" ] && break
  sleep 0.2
done
echo "bridge pid $pid"
sleep 3
perf record -F 997 --call-graph dwarf,16384 -p "$pid" -o target/profile/$tag.data -- sleep 8 2>target/profile/$tag.perf.log || true
wait $h || echo "harness rc $?"
uptime
perf script -i target/profile/$tag.data 2>/dev/null | inferno-collapse-perf > target/profile/$tag.folded
inferno-flamegraph --title "$scen ($tag)" --width 1400 target/profile/$tag.folded > target/profile/$tag.flame.svg
python3 benches/profile_share.py target/profile/$tag.folded

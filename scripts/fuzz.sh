#!/usr/bin/env bash
# Coverage-guided fuzzing of the Rust core (docs/FUZZING.md):
#   bash scripts/fuzz.sh SECONDS [TARGET...]
# runs every target (or those named) one after another, SECONDS of fuzzing split evenly between
# them (the build before it is not counted), and exits 1 if any target crashed, printing where
# the crash input is. Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Builds go to fuzz/target, the growing corpora to fuzz/corpus/<target>, crash inputs to
# fuzz/artifacts/<target>/, logs to fuzz/logs/ (all git-ignored). FUZZ_NICE (default 10) sets
# the niceness, so a fuzz run yields the CPU to other work; FUZZ_ARGS adds libFuzzer options
# (e.g. FUZZ_ARGS=-len_control=0 tries long inputs from the start).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(vocab_load encode_roundtrip decode_ids train)
die() { echo "fuzz.sh: error: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: bash scripts/fuzz.sh SECONDS [TARGET...] (targets: ${ALL_TARGETS[*]})"
total=$1
shift
[[ $total =~ ^[0-9]+$ ]] && [ "$total" -gt 0 ] || die "SECONDS must be a positive whole number, not '$total'"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || die "unknown target '$t' (targets: ${ALL_TARGETS[*]})"
done
per=$((total / ${#targets[@]}))
[ "$per" -ge 1 ] || die "$total s is less than one second per target for ${#targets[@]} targets"

rustup run nightly rustc --version >/dev/null 2>&1 || die "no nightly toolchain: run 'rustup toolchain install nightly'"
cargo +nightly fuzz --version >/dev/null 2>&1 || die "cargo-fuzz is missing: run 'cargo install cargo-fuzz'"

# Release code with debug assertions (overflow checks too). No sanitizer: the core's only unsafe
# code writes nodes through MaybeUninit and issues prefetch hints, which AddressSanitizer cannot
# fault; without it a target runs about twice as many inputs.
BUILD_FLAGS=(--release --debug-assertions --sanitizer none)
nice_level=${FUZZ_NICE:-10}
echo "fuzz.sh: building the targets (fuzz/target)"
(cd fuzz && nice -n "$nice_level" cargo +nightly fuzz build "${BUILD_FLAGS[@]}" 2>&1 | tail -n 3) \
    || die "the fuzz build failed"
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir=fuzz/target/$host/release

mkdir -p fuzz/logs
crashed=()
printf '%-17s %8s %10s %8s %7s %7s %9s %s\n' target seconds execs exec/s cov ft corpus result
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    artifacts=fuzz/artifacts/$t
    log=fuzz/logs/$t.log
    mkdir -p "$corpus" "$artifacts"
    before=$(ls "$artifacts")
    # The working corpus comes first (new inputs go there); seeds and saved regressions are read.
    extra=()
    for dir in fuzz/seeds/$t fuzz/regressions/$t; do
        [ -d "$dir" ] && extra+=("$dir")
    done
    # shellcheck disable=SC2206
    libfuzzer_args=(${FUZZ_ARGS:-})
    status=0
    nice -n "$nice_level" "$bin_dir/$t" "$corpus" "${extra[@]}" \
        -max_total_time="$per" -max_len=4096 -timeout=30 -rss_limit_mb=4096 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 "${libfuzzer_args[@]}" >"$log" 2>&1 || status=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    [ -n "$done_line" ] || done_line=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+' <<<"$done_line" | cut -d' ' -f2 || true)
    ft=$(grep -oE 'ft: [0-9]+' <<<"$done_line" | cut -d' ' -f2 || true)
    corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]+' <<<"$done_line" | cut -d' ' -f2 || true)
    new=$(comm -13 <(echo "$before") <(ls "$artifacts") | grep -E '^(crash|timeout|oom|leak|slow-unit)-' || true)
    result=ok
    if [ "$status" -ne 0 ] || [ -n "$new" ]; then
        result="FAILED (exit $status)"
        crashed+=("$t")
    fi
    printf '%-17s %8s %10s %8s %7s %7s %9s %s\n' "$t" "$per" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
    if [ "$result" != ok ]; then
        grep -m 1 -A 3 -E 'panicked at|ERROR: libFuzzer' "$log" | sed 's/^/    /' || true
        for f in $new; do
            echo "    crash input: $artifacts/$f"
            echo "    reproduce:   (cd fuzz && cargo +nightly fuzz run ${BUILD_FLAGS[*]} $t ../$artifacts/$f)"
            echo "    minimise:    (cd fuzz && cargo +nightly fuzz tmin ${BUILD_FLAGS[*]} $t ../$artifacts/$f)"
        done
        echo "    log: $log"
    fi
done

if [ ${#crashed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${crashed[*]}; a fixed crash input belongs in fuzz/regressions/<target>/" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${targets[*]}"

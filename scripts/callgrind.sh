#!/usr/bin/env bash
# Instructions per successful call, counted by callgrind, for every case of
# benches/success_path.rs: plain calls, `#[retry_with_backoff]` (with and without `timeout`, and
# with each guard: `breaker =`, `limiter =`, `budget =` as a ratio or a token bucket, all three),
# backon and tryhard, sync and async; and the sizes of the async functions' futures.
#
#   scripts/callgrind.sh              # every case
#   scripts/callgrind.sh plain attribute
#
# Needs cargo and valgrind only. Instruction counts, unlike seconds, repeat exactly on a busy
# machine, so the differences between cases mean something at the level of a few
# instructions. The figures are reported, never checked: this exits non-zero only when the
# build or valgrind fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
    echo "callgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
fi

# Cases in the order of the table, each with its baseline and the issue's target (extra
# instructions over the baseline), where it sets one. `timeout` may also spend one clock read:
# the `clock` case measures it. A guarded call reads the clock once before its attempt, once
# more after its success for a breaker and once at its start for a budget; the guards' own
# target is in time (< 50 ns a guard, `benches/guards.rs`), so they have none here.
#   case                    baseline      target
cases=(
    "plain                   -             -"
    "attribute               plain         5"
    "attribute_timeout       plain         5+clock"
    "clock                   plain         -"
    "attribute_breaker       attribute     -"
    "attribute_limiter       attribute     -"
    "attribute_budget        attribute     -"
    "attribute_budget_bucket attribute     -"
    "attribute_guards        attribute     -"
    "backon                  plain         -"
    "string_plain            -             -"
    "string_attribute        string_plain  -"
    "string_backon           string_plain  -"
    "async_plain             -             -"
    "async_attribute         async_plain   30"
    "async_timeout_by_hand   async_plain   -"
    "async_attribute_timeout async_timeout_by_hand -"
    "async_backon            async_plain   -"
    "async_tryhard           async_plain   -"
)

# Case names on the command line keep those cases (each measured with its baseline).
selected=("$@")
names=("${cases[@]%% *}")
for s in "${selected[@]}"; do
    known=false
    for name in "${names[@]}"; do
        [[ $s == "$name" ]] && known=true
    done
    if ! $known; then
        echo "callgrind.sh: unknown case $s; the cases: ${names[*]}" >&2
        exit 2
    fi
done

# Build the bench (release, as `cargo bench` does) and find its executable in cargo's
# messages; compiler errors still reach the terminal.
echo "building benches/success_path.rs (release)..." >&2
bin=$(cargo bench --bench success_path --no-run --message-format=json-render-diagnostics |
    grep '"kind":\["bench"\]' | grep '"name":"success_path"' |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [[ -z "$bin" || ! -x "$bin" ]]; then
    echo "callgrind.sh: no success_path executable found after the build" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

declare -A total calls per_call

# Runs one case under callgrind; records its total instruction count and number of calls.
measure() {
    local case=$1
    echo "callgrind: $case" >&2
    if ! valgrind --tool=callgrind --callgrind-out-file="$work/$case.out" \
        "$bin" "$case" >"$work/$case.stdout" 2>"$work/$case.stderr"; then
        echo "callgrind.sh: valgrind failed on case $case:" >&2
        cat "$work/$case.stderr" >&2
        exit 1
    fi
    # "==123== Collected : 456789" is callgrind's count of instructions executed.
    total[$case]=$(sed -n 's/^==[0-9]*== Collected : \([0-9]*\).*/\1/p' "$work/$case.stderr")
    calls[$case]=$(sed -n 's/.* over \([0-9]*\) calls .*/\1/p' "$work/$case.stdout")
    if [[ -z "${total[$case]}" || -z "${calls[$case]}" ]]; then
        echo "callgrind.sh: could not read the counts of case $case" >&2
        cat "$work/$case.stdout" "$work/$case.stderr" >&2
        exit 1
    fi
}

# Whether the table has a row for case $1: every case when none was named.
wanted() {
    local s
    ((${#selected[@]} == 0)) && return 0
    for s in "${selected[@]}"; do
        [[ $s == "$1" ]] && return 0
    done
    return 1
}

# `none` is the loop alone, with the program's start-up: subtracted from every case.
measure none
for row in "${cases[@]}"; do
    read -r case baseline target <<<"$row"
    wanted "$case" || continue
    [[ -n "${total[$case]:-}" ]] || measure "$case"
    if [[ $baseline != - && -z "${total[$baseline]:-}" ]]; then
        measure "$baseline"
    fi
    if [[ $target == 5+clock && -z "${total[clock]:-}" ]]; then
        measure clock
    fi
done
for case in "${!total[@]}"; do
    per_call[$case]=$(awk -v t="${total[$case]}" -v n="${total[none]}" -v c="${calls[$case]}" \
        'BEGIN { printf "%.2f", (t - n) / c }')
done

echo
echo "Instructions per successful call (callgrind; the loop alone, case \`none\`, subtracted;"
echo "${calls[none]} calls per case; binary $bin)"
echo
printf '%-24s %12s %-22s %10s  %s\n' case instr/call baseline difference target
for row in "${cases[@]}"; do
    read -r case baseline target <<<"$row"
    [[ -n "${per_call[$case]:-}" ]] || continue
    diff=""
    goal=""
    if [[ $baseline != - ]]; then
        diff=$(awk -v a="${per_call[$case]}" -v b="${per_call[$baseline]}" \
            'BEGIN { printf "%+.2f", a - b }')
        case $target in
        -) ;;
        5+clock)
            limit=$(awk -v c="${per_call[clock]}" -v p="${per_call[plain]}" \
                'BEGIN { printf "%.2f", 5 + (c - p) }')
            goal="<= +$limit (5 + one clock read)"
            ;;
        *)
            limit=$target
            goal="<= +$limit"
            ;;
        esac
        if [[ -n $goal ]]; then
            if awk -v d="$diff" -v l="$limit" 'BEGIN { exit !(d <= l) }'; then
                goal="$goal: met"
            else
                goal="$goal: NOT met"
            fi
        fi
    fi
    printf '%-24s %12s %-22s %10s  %s\n' "$case" "${per_call[$case]}" \
        "${baseline/#-/}" "$diff" "$goal"
done
echo
echo "tryhard retries futures only: it has no sync case."

# The futures' sizes need no valgrind: the bench prints them.
echo
echo "Future sizes (size_of_val of the future an async fn returns)"
echo
"$bin" sizes >"$work/sizes"
declare -A size
while read -r _ name bytes; do
    size[$name]=$bytes
done <"$work/sizes"
# Each future against what it replaces: the plain future, or with `timeout` the plain future
# under `tokio::time::timeout`, written by hand.
printf '%-24s %8s %-22s %10s  %s\n' future bytes baseline difference target
for row in "async_plain -" "async_timeout_by_hand -" "async_attribute async_plain" \
    "async_attribute_timeout async_timeout_by_hand"; do
    read -r name baseline <<<"$row"
    if [[ $baseline == - ]]; then
        printf '%-24s %8s\n' "$name" "${size[$name]}"
        continue
    fi
    diff=$((size[$name] - size[$baseline]))
    verdict="NOT met"
    ((diff <= 64)) && verdict="met"
    printf '%-24s %8s %-22s %+10d  %s\n' "$name" "${size[$name]}" "$baseline" "$diff" \
        "<= +64: $verdict"
done

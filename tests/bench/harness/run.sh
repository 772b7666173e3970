#!/usr/bin/env bash
# Gateway overhead benchmark: wrk against a fake nginx OpenAI upstream, direct and via gateways.
#
#   run.sh                                      direct vs LiteLLM vs Portkey (make bench-setup first)
#   run.sh --target URL --key KEY --model M     direct vs any OpenAI-compatible gateway
#
# Options:
#   --target URL        gateway base URL including /v1 (requests go to URL/chat/completions)
#   --key KEY           bearer key for --target       --name NAME   its label (default: target)
#   --model M           model the gateway maps to http://127.0.0.1:18001/v1      (mode json)
#   --stream-model M    model mapped to http://127.0.0.1:18001/sse/v1 (mode sse; default: --model)
#   --slow-model M      model mapped to http://127.0.0.1:18002/v1 (mode slow; skipped if unset)
#   --pid PID           gateway process (tree) to sample for CPU and peak RSS
#   --stack-pids "P.."  every process (tree) of the gateway's stack, for its CPU per phase
#   --header 'K: V'     extra request header for --target (repeatable)
#   --targets "..."     subset/order of targets (default: direct litellm portkey, or direct NAME)
#   --modes "..."       subset of: json sse slow (default: all available)
#   --rounds N          interleaved rounds (default 3)   --c1-secs S (10)   --c32-secs S (15)
#   --out DIR           where results.tsv / summary.txt go (default /tmp/gwbench-results/<UTC time>)
#   --upstream-only     just run the fake upstream(s) until Ctrl-C (to develop/debug a gateway)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PEERS=${PEERS_DIR:-/opt/peers}
ROUNDS=3 C1_SECS=10 C32_SECS=15 MODES="" TARGETS="" OUT=""
G_NAME=target G_URL="" G_KEY="" G_MODEL="" G_SMODEL="" G_SLOW="" G_PID="" G_STACK="" G_HEADERS="" UPSTREAM_ONLY=""

while [ $# -gt 0 ]; do
    case $1 in
        --target) G_URL=${2%/}; shift ;;         --key) G_KEY=$2; shift ;;
        --model) G_MODEL=$2; shift ;;            --stream-model) G_SMODEL=$2; shift ;;
        --slow-model) G_SLOW=$2; shift ;;        --pid) G_PID=$2; shift ;;
        --name) G_NAME=$2; shift ;;              --header) G_HEADERS="$G_HEADERS|$2"; shift ;;
        --targets) TARGETS=$2; shift ;;          --modes) MODES=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;            --out) OUT=$2; shift ;;
        --c1-secs) C1_SECS=$2; shift ;;          --c32-secs) C32_SECS=$2; shift ;;
        --stack-pids) G_STACK=$2; shift ;;
        --upstream-only) UPSTREAM_ONLY=1 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

ECHO_SO=/usr/lib/nginx/modules/ngx_http_echo_module.so
if [ -z "$MODES" ]; then
    MODES="json sse"
    [ -f "$ECHO_SO" ] && { [ -z "$G_URL" ] || [ -n "$G_SLOW" ] || [ -n "$UPSTREAM_ONLY" ]; } && MODES="$MODES slow"
fi
if [ -z "$TARGETS" ]; then
    if [ -n "$G_URL" ]; then TARGETS="direct $G_NAME"; else TARGETS="direct litellm portkey"; fi
fi
OUT=${OUT:-${TMPDIR:-/tmp}/gwbench-results/$(date -u +%Y%m%dT%H%M%SZ)}
[ -n "$UPSTREAM_ONLY" ] || mkdir -p "$OUT"
RUN=$(mktemp -d /tmp/gwbench.XXXXXX)
chmod 755 "$RUN"; mkdir -p "$RUN/tmp"   # nginx workers (user nobody) write temp files here
STARTED=""                              # "name:pid" of everything this script started

# ---------- processes ----------
tree_pids() { echo "$1"; local c; for c in $(pgrep -P "$1" || true); do tree_pids "$c"; done; }
stop_all() {
    local e
    for e in $STARTED; do
        local p=${e#*:}
        if kill -0 "$p" 2>/dev/null; then kill $(tree_pids "$p" | tac) 2>/dev/null || true; fi
    done
    sleep 1
    echo "stopped: ${STARTED:-nothing}; logs in $RUN"
}
trap stop_all EXIT

wait_http() {  # URL SECONDS
    local i
    for i in $(seq 1 $(( $2 * 2 ))); do curl -s -o /dev/null --max-time 2 "$1" && return 0; sleep 0.5; done
    echo "timed out waiting for $1" >&2; return 1
}

start_upstream() {
    nginx -p "$RUN" -c "$HERE/upstream/nginx.conf"
    STARTED="$STARTED upstream:$(cat "$RUN/nginx.pid")"
    if [[ " $MODES " == *" slow "* ]]; then
        nginx -p "$RUN" -c "$HERE/upstream/nginx-delay.conf"
        STARTED="$STARTED upstream-delay:$(cat "$RUN/nginx-delay.pid")"
    fi
}

start_litellm() {
    # LITELLM_LOCAL_*: use the bundled cost map etc. instead of fetching them at start-up.
    env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True \
        LITELLM_LOCAL_BLOG_POSTS=True LITELLM_LOCAL_POLICY_TEMPLATES=True \
        LITELLM_LOCAL_AUTOROUTER_PRESETS=True LITELLM_LOG=ERROR \
        "$PEERS/litellm-venv/bin/litellm" --config "$HERE/peers/litellm.yaml" \
        --host 127.0.0.1 --port 18010 --num_workers 1 >"$RUN/litellm.log" 2>&1 &
    STARTED="$STARTED litellm:$!"
    wait_http http://127.0.0.1:18010/health/liveliness 120
}

start_portkey() {
    node --require "$HERE/peers/loopback.cjs" \
        "$PEERS/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" \
        --port=18020 --headless >"$RUN/portkey.log" 2>&1 &
    STARTED="$STARTED portkey:$!"
    wait_http http://127.0.0.1:18020/ 60
}

pid_of() { local e; for e in $STARTED; do if [ "${e%%:*}" = "$1" ]; then echo "${e#*:}"; fi; done; }

# ---------- targets: URL, key, model and extra headers per mode ----------
upstream_base() {  # mode -> base URL (with /v1) of the fake upstream flavour
    case $1 in json) echo http://127.0.0.1:18001/v1 ;; sse) echo http://127.0.0.1:18001/sse/v1 ;;
               slow) echo http://127.0.0.1:18002/v1 ;; esac
}
# sets URL KEY MODEL HDRS PID SPIDS for target $1, mode $2
target_spec() {
    HDRS="" PID="" SPIDS=""
    case $1 in
        direct)  URL="$(upstream_base "$2")/chat/completions"; KEY=sk-fake-upstream; MODEL=gpt-4o-mini
                 PID=$(pid_of upstream) ;;
        litellm) URL=http://127.0.0.1:18010/v1/chat/completions; KEY=sk-bench-master
                 MODEL=$(case $2 in json) echo fake-gpt ;; sse) echo fake-gpt-stream ;; slow) echo fake-gpt-slow ;; esac)
                 PID=$(pid_of litellm) ;;
        portkey) URL=http://127.0.0.1:18020/v1/chat/completions; KEY=sk-fake-upstream; MODEL=gpt-4o-mini
                 HDRS="x-portkey-provider: openai|x-portkey-custom-host: $(upstream_base "$2")"
                 PID=$(pid_of portkey) ;;
        *)       URL="$G_URL/chat/completions"; KEY=$G_KEY; HDRS=$G_HEADERS; PID=$G_PID; SPIDS=$G_STACK
                 MODEL=$(case $2 in json) echo "$G_MODEL" ;; sse) echo "${G_SMODEL:-$G_MODEL}" ;; slow) echo "$G_SLOW" ;; esac) ;;
    esac
}

# ---------- measurements ----------
cpu_ticks() {  # utime+stime(+children) of a process tree, in clock ticks
    [ -n "$1" ] || { echo 0; return; }
    local p t=0
    for p in $(tree_pids "$1"); do
        t=$(( t + $(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{s = $12 + $13 + $14 + $15} END {print s + 0}') ))
    done
    echo $t
}
stack_ticks() {  # the sum of cpu_ticks over the trees of the pids in $1 (0 when none)
    local p t=0
    for p in $1; do t=$(( t + $(cpu_ticks "$p") )); done
    echo $t
}
mem_kb() {  # FIELD PID: sum of VmHWM (peak) or VmRSS over the tree
    [ -n "$2" ] || { echo -; return; }
    local p t=0
    for p in $(tree_pids "$2"); do t=$(( t + $(awk -v f="$1:" '$1 == f {v = $2} END {print v + 0}' "/proc/$p/status" 2>/dev/null) )); done
    echo $t
}

steal_ticks() {  # "steal total": the machine's CPU ticks stolen by the host, and all of them (/proc/stat)
    awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t; exit }' /proc/stat
}

wrk_run() {  # target mode conc secs -> RESULT line
    target_spec "$1" "$2"
    BENCH_MODEL=$MODEL BENCH_KEY=$KEY BENCH_HEADERS=$HDRS BENCH_STREAM=$([ "$2" = sse ] && echo 1 || echo 0) \
        wrk -t1 -c"$3" -d"$4"s --timeout 10s -s "$HERE/bench.lua" "$URL" | grep '^RESULT'
}

sanity() {  # one request per target/mode; check status and body
    target_spec "$1" "$2"
    local body h stream=false want='"usage"'
    local -a hs hargs=()
    [ "$2" = sse ] && stream=true want='data: \[DONE\]'
    IFS='|' read -ra hs <<<"$HDRS"
    for h in "${hs[@]}"; do if [ -n "$h" ]; then hargs+=(-H "$h"); fi; done
    body=$(curl -s --max-time 20 -w '\n%{http_code}' "$URL" "${hargs[@]}" \
        -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":$stream,\"stream_options\":{\"include_usage\":true}}" \
        || true)
    if [ "$(tail -1 <<<"$body")" != 200 ] || ! grep -q "$want" <<<"$body"; then
        echo "SANITY FAIL $1 $2: $(head -c 400 <<<"$body")" >&2; exit 1
    fi
    echo "sanity ok: $1 $2 ($(wc -c <<<"$body") bytes)"
}

# ---------- main ----------
echo "out: $OUT   run dir: $RUN   targets: $TARGETS   modes: $MODES   rounds: $ROUNDS"
start_upstream
if [ -n "$UPSTREAM_ONLY" ]; then
    echo "fake upstream: http://127.0.0.1:18001/v1 (json), http://127.0.0.1:18001/sse/v1 (sse), http://127.0.0.1:18002/v1 (50 ms); Ctrl-C stops"
    sleep infinity & STARTED="$STARTED sleep:$!"
    wait $! || true
    exit 0
fi
for t in $TARGETS; do
    case $t in litellm) start_litellm ;; portkey) start_portkey ;; esac
done
declare -A RSS_IDLE
for t in $TARGETS; do target_spec "$t" json; RSS_IDLE[$t]=$(mem_kb VmRSS "$PID"); done

for t in $TARGETS; do for m in $MODES; do sanity "$t" "$m"; done; done
for t in $TARGETS; do for m in $MODES; do wrk_run "$t" "$m" 16 3 >/dev/null; done; done   # warm-up

{
    echo "# date=$(date -u +%FT%TZ) host=$(hostname) nproc=$(nproc) mem_total_kb=$(awk '/MemTotal/{print $2}' /proc/meminfo)"
    printf 'round\ttarget\tmode\tconc\trequests\tsecs\trps\tp50_ms\tp90_ms\tp99_ms\tmax_ms\terrors\tnon2xx\tcpu_s_per_1k\tstack_cpu_s_per_1k\tsteal_pct\n'
} >"$OUT/results.tsv"
for r in $(seq 1 "$ROUNDS"); do
    for m in $MODES; do
        for c in 1 32; do
            secs=$([ "$c" = 1 ] && echo "$C1_SECS" || echo "$C32_SECS")
            for t in $TARGETS; do
                target_spec "$t" "$m"
                before=$(cpu_ticks "$PID") sbefore=$(stack_ticks "$SPIDS")
                read -r st0 tt0 < <(steal_ticks)
                line=$(wrk_run "$t" "$m" "$c" "$secs")
                read -r st1 tt1 < <(steal_ticks)
                after=$(cpu_ticks "$PID") safter=$(stack_ticks "$SPIDS")
                # the share of the machine's CPU time the host took for others meanwhile (a busy host)
                steal=$(awk -v s=$(( st1 - st0 )) -v t=$(( tt1 - tt0 )) 'BEGIN { printf (t > 0 ? "%.1f" : "-"), 100 * s / t }')
                # RESULT requests=.. secs=.. rps=.. p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. errors=.. non2xx=..
                vals=$(sed 's/RESULT //; s/[a-z0-9_]*=//g' <<<"$line")
                cpu=$(awk -v d=$(( after - before )) -v n="${vals%% *}" -v hz="$(getconf CLK_TCK)" \
                      'BEGIN { printf (n > 0 ? "%.3f" : "-"), d / hz / n * 1000 }')
                scpu=$(awk -v d=$(( safter - sbefore )) -v n="${vals%% *}" -v hz="$(getconf CLK_TCK)" -v s="$SPIDS" \
                      'BEGIN { printf (n > 0 && s != "" ? "%.3f" : "-"), d / hz / n * 1000 }')
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$m" "$c" "$(tr ' ' '\t' <<<"$vals")" "$cpu" "$scpu" "$steal" \
                    >>"$OUT/results.tsv"
                echo "round $r  $t  $m  c=$c  $line  cpu_s/1k=$cpu  stack_cpu_s/1k=$scpu  steal%=$steal"
            done
        done
    done
done

{
    echo "memory (KB, whole process tree): target idle_rss_after_start peak_rss(VmHWM)"
    for t in $TARGETS; do target_spec "$t" json; echo "  $t ${RSS_IDLE[$t]} $(mem_kb VmHWM "$PID")"; done
} >"$OUT/memory.txt"
"$HERE/report.sh" "$OUT/results.tsv" | tee "$OUT/summary.txt"
cat "$OUT/memory.txt" | tee -a "$OUT/summary.txt"

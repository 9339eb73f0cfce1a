#!/usr/bin/env bash
# Crash test: two paycore nodes share the API port under paybench load (balance
# and card payments, card ones through paysim with some timeouts, lost and
# duplicate callbacks); one node at a time is killed with SIGKILL at a random
# moment and restarted; Redis is restarted once (coming back empty) and
# PostgreSQL once (stopped in "immediate" mode: a crash, WAL replay at start).
# paybench retries what got no answer (or 503 / REQUEST_IN_PROGRESS) with the
# same Idempotency-Key, as a merchant would, and records every payment it got
# a 2xx answer for. After the load, the repair job settles what was left in
# flight, and then:
#   1. every payment is final (nothing CREATED / PROCESSING / UNKNOWN /
#      REVIEW / CHALLENGE left), every trade is final or open within its
#      expiry (trades live 60 s, so those of the load's first part have
#      expired and must have been closed), and every trade that is paid has
#      its payment SUCCESS;
#   2. paysim's own records (GET /sim/txns?type=PAY&status=SUCCESS): no
#      payment_no charged twice; every charge belongs to a payment paycore
#      holds as SUCCESS, for its channel part; every trade with a charge
#      keeps exactly one successful payment, each other one returned whole by
#      an ERROR refund of that payment that succeeded;
#   3. GET /admin/ledger/check answers "ok": true;
#   4. every trade and payment paybench got a 2xx for is in the database (and
#      the payments answered SUCCESS are still SUCCESS);
# and about the run itself: each kill found its node alive (one that died on
# its own fails) and landed while paybench ran, Redis and PostgreSQL came
# back (PostgreSQL with a new start time), paybench exited 0, the load made
# payments of its own (not only the set-up's), both nodes answer at the end,
# and no log holds a sanitizer report.
# paycore runs with a copy of rules/ whose risk.lua accepts every payment (the
# default rule would hold the load test's repeat buyers for review).
#
#   tests/crash/crash_test.sh [BUILD_DIR]     (default build/)
#   PC_CRASH_KILLS=20 PC_CRASH_SECONDS=150    the long form (default 6 kills in 45 s)
#   PC_CRASH_DIR=var/crash                    servers' data and logs (kept on failure)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
bin=$(cd "${1:-$root/build}" && pwd)
kills=${PC_CRASH_KILLS:-6}
seconds=${PC_CRASH_SECONDS:-45}
var=${PC_CRASH_DIR:-$root/var/crash}
# A PC_CRASH_DIR is emptied only when this script made it (its marker
# inside) or it is empty: one pointed at /tmp or a home directory is
# refused, not wiped. The default, var/crash, is the repository's own.
if [ -n "${PC_CRASH_DIR:-}" ] && [ -e "$var" ] && [ ! -f "$var/.paycore-crash-test" ] &&
  [ -n "$(ls -A "$var" 2>/dev/null)" ]; then
  printf '[crash] %s is not empty and not a crash-test directory: choose another PC_CRASH_DIR\n' \
    "$var" >&2
  exit 2
fi
rm -rf "$var" && mkdir -p "$var" && touch "$var/.paycore-crash-test"
var=$(cd "$var" && pwd)

log() { printf '[crash] %s\n' "$*" >&2; }
fail=0
check() { # check NAME CONDITION-RESULT(0 ok) DETAIL
  if [ "$2" = 0 ]; then log "ok   $1${3:+ ($3)}"; else log "FAIL $1${3:+ ($3)}"; fail=1; fi
}

pids=()
node_pid=(0 0)
cleanup() {
  for p in "${node_pid[@]}" "${pids[@]}"; do [ "$p" != 0 ] && kill -TERM "$p" 2>/dev/null; done
  for p in "${node_pid[@]}" "${pids[@]}"; do [ "$p" != 0 ] && wait "$p" 2>/dev/null; done
  "$root/scripts/services" pg-stop "$var/pg" >/dev/null 2>&1 || true
  "$root/scripts/services" redis-stop "$var/redis" >/dev/null 2>&1 || true
}
trap cleanup EXIT

pg_port=$(pc_free_port 24432)
# Durable settings: with synchronous_commit off, the "immediate" stop below
# loses the last commits (a created trade answered 201 went missing in the
# first version of this test).
"$root/scripts/services" pg-start "$var/pg" "$pg_port" || exit 1
redis_port=$(pc_free_port 24379)
"$root/scripts/services" redis-start "$var/redis" "$redis_port" || exit 1
sql() { psql -X -q -h 127.0.0.1 -p "$pg_port" -U paycore -d paycore -tA "$@"; }

rules="$var/rules"
mkdir -p "$rules" && cp -r "$root/rules/." "$rules/"
cat >"$rules/risk.lua" <<'LUA'
-- Crash-test copy: accepts every payment (repeat buyers would be held for review).
return function(ctx)
  return { decision = "ACCEPT", score = 0, reasons = {} }
end
LUA
cat >"$rules/tests/risk.json" <<'JSON'
{"base_ctx": {"kind": "PAYMENT", "amount": 1999, "currency": "CNY", "method": "CARD",
              "product": "INSTANT", "now": 1795000000},
 "examples": [{"name": "the crash-test copy accepts everything", "ctx": {},
               "expect": {"decision": "ACCEPT", "score": 0, "reasons": []}}]}
JSON

http_port=$(pc_free_port 24080)
sim_port=$(pc_free_port 24090 "$http_port")
admin_port=("$(pc_free_port 24081 "$http_port" "$sim_port")")
admin_port+=("$(pc_free_port 24085 "$http_port" "$sim_port" "${admin_port[0]}")")
token=crash-admin-token
"$bin/paysim" --port "$sim_port" --seed 11 --callback-base "http://127.0.0.1:$http_port" \
  --callback-retry-ms 300 --max-txns 2000000 >"$var/paysim.log" 2>&1 &
pids+=($!)

export PAYCORE_DATABASE_URL="postgresql://paycore@127.0.0.1:$pg_port/paycore"
export PAYCORE_REDIS_URL="redis://127.0.0.1:$redis_port/0"
export PAYCORE_HTTP_PORT=$http_port PAYCORE_ADMIN_TOKEN=$token PAYSIM_PORT=$sim_port
# The card channels with volume caps far above the load: every payment they
# are sent is counted and given back under the kills (check 5), and none is
# refused. (Both: route.lua sends card payments to the cheaper sim_card and
# falls back to sim_card2 on a retryable decline; before 2967ea5 a single
# failure of sim_card sent them to sim_card2, which alone had caps here.)
mkdir -p "$var/channels"
cp "$root"/channels/*.json "$var/channels/"
for ch in sim_card sim_card2; do
  sed 's/"weight":/"volume": {"daily": 1000000000000, "monthly": 10000000000000}, "weight":/' \
    "$root/channels/$ch.json" >"$var/channels/$ch.json"
done
export PAYCORE_RULES_DIR=$rules PAYCORE_CHANNELS_DIR=$var/channels PAYCORE_ACCESS_LOG=false
export PAYCORE_DEMO=true # paysim's public demo channel secrets
export PAYCORE_NOTIFY_PRIVATE_TARGETS=true # paybench's receiver is on loopback
export PAYCORE_REPAIR_FIRST_QUERY_MS=1000 PAYCORE_REPAIR_SCHEDULE_MS=1000,1000,2000,2000,4000
export PAYCORE_REPAIR_POLL_MS=200 PAYCORE_REPAIR_NOT_FOUND_AFTER_S=5
# Error refunds of payments charged twice are queried as quickly.
export PAYCORE_REFUND_QUERY_SCHEDULE_MS=1000,1000,2000,2000,4000
export PAYCORE_LIMIT_BUYER_DAILY=1000000000000 PAYCORE_LIMIT_BUYER_MONTHLY=1000000000000
export PAYCORE_LIMIT_CARD_DAILY=1000000000000 PAYCORE_DB_QUERY_TIMEOUT_MS=3000

start_node() { # start_node I: starts node I and waits for its admin port
  local i=$1
  PAYCORE_ADMIN_PORT=${admin_port[$i]} PAYCORE_NODE_NAME=crash$i "$bin/paycore" \
    >>"$var/paycore$i.log" 2>&1 &
  node_pid[$i]=$!
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "http://127.0.0.1:${admin_port[$i]}/admin/rules" \
      -H "Authorization: Bearer $token" 2>/dev/null && return 0
    sleep 0.05
  done
  log "node $i did not come up (see $var/paycore$i.log)"
  return 1
}
start_node 0 || exit 1
start_node 1 || exit 1
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$sim_port/sim/faults?channel_id=sim_card" && break
  sleep 0.05
done

acked="$var/acked.txt"
"$bin/paybench" --port "$http_port" --admin-port "${admin_port[0]}" --admin-token "$token" \
  --scenario pay --card-percent 50 --merchants 3 --buyers 100 --connections 12 \
  --duration "$seconds" --retries 8 --timeout-ms 15000 --drain 40 --record "$acked" \
  --expire-seconds 60 \
  --no-ledger-check --note "crash-test risk.lua copy: accepts everything" >"$var/paybench.log" 2>&1 &
bench_pid=$!
pids+=($bench_pid)
for _ in $(seq 1 1800); do  # up to 3 minutes on a busy machine
  grep -q '^setup: .*funded' "$var/paybench.log" 2>/dev/null && break
  kill -0 "$bench_pid" 2>/dev/null || break
  sleep 0.1
done
grep -q '^setup: .*funded' "$var/paybench.log" || { log "paybench set-up failed:"; cat "$var/paybench.log" >&2; exit 1; }
# Set once the buyers are funded. Faults that leave payments in flight: timeouts (some charged anyway), lost
# and duplicate callbacks, and latency so that kills land mid-call.
for ch in sim_card sim_card2; do
  curl -fsS -o /dev/null -X POST "http://127.0.0.1:$sim_port/sim/faults" \
    -H 'Content-Type: application/json' \
    -d "{\"channel_id\":\"$ch\",\"latency_ms\":15,\"timeout_rate\":0.01,\"success_after_timeout_rate\":0.01,\"lost_callback_rate\":0.02,\"duplicate_callback_rate\":0.02}" ||
    log "could not set paysim faults on $ch"
done
log "load running ($seconds s); $kills kills, Redis and PostgreSQL restarts on the way"
load_start=$(sql -c "SELECT now()")

# Spaced so that the kills, each node's restart and the two service
# restarts fit in the load's time (each must land while paybench runs):
# the sleeps average kills/(kills+6) of it and reach 1.5 times that at
# worst, which leaves the restarts (about a second each, PostgreSQL's a few)
# their time on a slow machine.
gap_ms=$((seconds * 1000 / (kills + 6)))
landed=0
redis_at=$(((kills + 1) / 3))
pg_at=$((2 * (kills + 1) / 3))
for k in $(seq 1 "$kills"); do
  sleep "$(awk -v g="$gap_ms" -v r="$RANDOM" 'BEGIN { printf "%.3f", g * (0.5 + r / 32768) / 1000 }')"
  n=$((RANDOM % 2))
  # A node that died on its own (a crash, an abort after a restart of
  # PostgreSQL) is a failure, not one more kill.
  kill -0 "${node_pid[$n]}" 2>/dev/null ||
    check "node $n alive before kill $k" 1 "it had exited: see $var/paycore$n.log"
  kill -0 "$bench_pid" 2>/dev/null && landed=$((landed + 1))
  kill -KILL "${node_pid[$n]}" 2>/dev/null
  wait "${node_pid[$n]}" 2>/dev/null
  log "kill $k: node $n (SIGKILL)"
  sleep "0.$((RANDOM % 5))"
  start_node "$n" || fail=1
  if [ "$k" = "$redis_at" ]; then
    "$root/scripts/services" redis-stop "$var/redis"
    sleep 0.3
    if "$root/scripts/services" redis-start "$var/redis" "$redis_port"; then
      log "Redis restarted (empty)"
    else
      check "Redis restarted" 1 "see $var/redis"
    fi
  fi
  if [ "$k" = "$pg_at" ]; then
    pg_began=$(sql -c "SELECT pg_postmaster_start_time()")
    "$root/scripts/services" pg-stop "$var/pg" immediate
    sleep 0.5
    "$root/scripts/services" pg-start "$var/pg" "$pg_port"
    # Started anew, not left running by a stop that failed.
    pg_now=$(sql -c "SELECT pg_postmaster_start_time()")
    [ -n "$pg_now" ] && [ "$pg_now" != "$pg_began" ]
    check "PostgreSQL restarted (immediate stop)" "$?" "started $pg_began, now $pg_now"
  fi
done
[ "$landed" = "$kills" ]
check "every kill landed while paybench ran" "$?" "$landed of $kills"
wait "$bench_pid"
check "paybench ran to its end" "$?" "exit status: see $var/paybench.log"
log "paybench: $(grep -E '^(payments|flows):' "$var/paybench.log" | tr '\n' ' ')"
grep -E '^(error|errors):' "$var/paybench.log" >&2

# Let the repair job settle what is in flight, the refund runner return what
# was charged twice, and the close sweep close what expired (trades live 60
# s here: those of the load's first part are past their expiry by now).
open_where="status IN ('CREATED', 'PROCESSING', 'UNKNOWN', 'REVIEW', 'CHALLENGE')"
open_sql="SELECT (SELECT count(*) FROM payments WHERE $open_where) + (SELECT count(*) FROM payments WHERE needs_error_refund AND status = 'SUCCESS' AND NOT error_refund_made) + (SELECT count(*) FROM refunds WHERE status NOT IN ('SUCCESS', 'FAILED', 'TERMINATED')) + (SELECT count(*) FROM trades WHERE status = 'WAIT_BUYER_PAY' AND expires_at <= now())"
# First until the load's first trades are past their expiry (and the sweep
# had a few seconds), so that the expiry check has something to check.
for _ in $(seq 1 180); do
  [ "$(sql -c "SELECT count(*) FROM trades WHERE created_at >= '$load_start' AND expires_at <= now() - interval '5 seconds'")" -gt 0 ] && break
  sleep 0.5
done
for _ in $(seq 1 240); do
  [ "$(sql -c "$open_sql")" = 0 ] && break
  sleep 0.5
done

# 1. Final states.
n=$(sql -c "SELECT count(*) FROM payments WHERE $open_where")
check "every payment is final" "$([ "$n" = 0 ] && echo 0 || echo 1)" "$n still open: $(sql -c "SELECT string_agg(payment_no || ' ' || status, ', ') FROM payments WHERE $open_where")"
n=$(sql -c "SELECT count(*) FROM trades WHERE status = 'WAIT_BUYER_PAY' AND expires_at <= now()")
expired=$(sql -c "SELECT count(*) FROM trades WHERE created_at >= '$load_start' AND expires_at <= now()")
[ "$n" = 0 ] && [ "$expired" -gt 0 ]
check "every open trade is within its expiry" "$?" "$n past expiry; $expired of the load's trades had expired by now"
n=$(sql -c "SELECT count(*) FROM trades t WHERE t.status IN ('PAY_SUCCESS', 'TRADE_SUCCESS') AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.payment_no = t.payment_no AND p.status = 'SUCCESS' AND p.trade_no = t.trade_no)")
check "every paid trade has its payment SUCCESS" "$([ "$n" = 0 ] && echo 0 || echo 1)" "$n without"
# A payment that is not its trade's must have been given back: an ERROR
# refund of that very payment, for all of it, that succeeded.
stray_where="p.status = 'SUCCESS' AND t.payment_no IS DISTINCT FROM p.payment_no AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_no = p.payment_no AND r.type = 'ERROR' AND r.status = 'SUCCESS' AND r.amount = p.amount)"
n=$(sql -c "SELECT count(*) FROM payments p JOIN trades t USING (trade_no) WHERE $stray_where")
check "every successful payment is its trade's, or returned whole by an ERROR refund that succeeded" "$([ "$n" = 0 ] && echo 0 || echo 1)" "$n stray: $(sql -c "SELECT string_agg(p.payment_no, ', ') FROM payments p JOIN trades t USING (trade_no) WHERE $stray_where")"

# 2. paysim's records against ours.
curl -fsS "http://127.0.0.1:$sim_port/sim/txns?type=PAY&status=SUCCESS" >"$var/sim_pay.json" || log "GET /sim/txns failed"
sql -c "CREATE TABLE crash_sim (j jsonb)" >/dev/null
sql -c "\\copy crash_sim FROM '$var/sim_pay.json' WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')" >/dev/null
sql -c "CREATE TABLE crash_charge AS SELECT t->>'paycore_ref' AS payment_no, (t->>'amount')::bigint AS amount FROM crash_sim, jsonb_array_elements(j->'txns') t" >/dev/null
charges=$(sql -c "SELECT count(*) FROM crash_charge")
n=$(sql -c "SELECT count(*) FROM (SELECT payment_no FROM crash_charge GROUP BY payment_no HAVING count(*) > 1) d")
check "no payment charged twice at the channel" "$([ "$n" = 0 ] && echo 0 || echo 1)" "$charges charges, $n payment_no charged more than once"
n=$(sql -c "SELECT count(*) FROM crash_charge c LEFT JOIN payments p USING (payment_no) WHERE p.status IS DISTINCT FROM 'SUCCESS'")
check "every channel charge is a SUCCESS payment here" "$([ "$n" = 0 ] && echo 0 || echo 1)" "$n not: $(sql -c "SELECT string_agg(c.payment_no || '=' || coalesce(p.status, 'missing'), ', ') FROM crash_charge c LEFT JOIN payments p USING (payment_no) WHERE p.status IS DISTINCT FROM 'SUCCESS'")"
n=$(sql -c "SELECT count(*) FROM (SELECT p.trade_no, count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_no = p.payment_no AND r.type = 'ERROR' AND r.status = 'SUCCESS' AND r.amount = p.amount)) AS kept FROM payments p WHERE p.status = 'SUCCESS' AND p.trade_no IN (SELECT p2.trade_no FROM crash_charge c JOIN payments p2 USING (payment_no)) GROUP BY p.trade_no) d WHERE kept <> 1")
check "every charged trade keeps one successful payment; the others returned whole" "$([ "$n" = 0 ] && echo 0 || echo 1)" "$n trades otherwise"
n=$(sql -c "SELECT count(*) FROM crash_charge c JOIN payments p USING (payment_no) WHERE c.amount <> p.external_amount")
check "every channel charge is of the payment's channel part" "$([ "$n" = 0 ] && echo 0 || echo 1)" "$n differ"

# 3. The ledger.
lc=$(curl -sS "http://127.0.0.1:${admin_port[0]}/admin/ledger/check" -H "Authorization: Bearer $token")
check "ledger check" "$(echo "$lc" | grep -q '"ok":true' && echo 0 || echo 1)" "$lc"

# 5. Channel volume counts: each is what the payments counted on it add up to
# (a take, its give-back on a failure or fallback, a late success counted
# again, a charge by a channel the payment had fallen back from), whatever
# was killed or restarted in between.
n=$(sql -c "SELECT count(*) FROM channel_volume v WHERE v.amount <> coalesce((SELECT sum(p.external_amount) FROM payments p WHERE p.channel_id = v.channel_id AND p.currency = v.currency AND p.volume_day IS NOT NULL AND v.period IN (to_char(p.volume_day, 'YYYY-MM-DD'), to_char(p.volume_day, 'YYYY-MM'))), 0) + coalesce((SELECT sum(p.external_amount) FROM channel_volume_elsewhere e JOIN payments p USING (payment_no) WHERE e.channel_id = v.channel_id AND p.currency = v.currency AND p.external_amount > 0 AND v.period IN (to_char(e.day, 'YYYY-MM-DD'), to_char(e.day, 'YYYY-MM'))), 0)")
counted=$(sql -c "SELECT count(*) FROM payments WHERE volume_day IS NOT NULL")
[ "$n" = 0 ] && [ "$counted" -gt 0 ]
check "channel volume counts match the payments counted" "$?" "$n counts differ ($counted payments counted): $(sql -c "SELECT string_agg(channel_id || ' ' || currency || ' ' || period || '=' || amount, ', ') FROM channel_volume")"

# 4. Acknowledged payments.
sql -c "CREATE TABLE crash_acked (payment_no text, trade_no text, status text)" >/dev/null
sql -c "\\copy crash_acked FROM '$acked' WITH (FORMAT text, DELIMITER ' ')" >/dev/null
ntrades=$(sql -c "SELECT count(*) FROM crash_acked WHERE payment_no = '-'")
n=$(sql -c "SELECT count(*) FROM crash_acked a LEFT JOIN trades t USING (trade_no) WHERE a.payment_no = '-' AND t.trade_no IS NULL")
check "every acknowledged trade is in the database" "$([ "$n" = 0 ] && echo 0 || echo 1)" "$ntrades acknowledged, $n missing"
sql -c "DELETE FROM crash_acked WHERE payment_no = '-'" >/dev/null
nack=$(sql -c "SELECT count(*) FROM crash_acked")
n=$(sql -c "SELECT count(*) FROM crash_acked a LEFT JOIN payments p USING (payment_no) WHERE p.payment_no IS NULL")
check "every acknowledged payment is in the database" "$([ "$n" = 0 ] && echo 0 || echo 1)" "$nack acknowledged, $n missing"
n=$(sql -c "SELECT count(*) FROM crash_acked a JOIN payments p USING (payment_no) WHERE a.status = 'SUCCESS' AND p.status <> 'SUCCESS'")
check "every payment answered SUCCESS is still SUCCESS" "$([ "$n" = 0 ] && echo 0 || echo 1)" "$n changed"
retries=$(sed -nE 's/.*retries: ([0-9]+); connection errors: ([0-9]+).*/\1 \2/p' "$var/paybench.log")
set -- $retries
[ "${1:-0}" -gt 0 ] && [ "${2:-0}" -gt 0 ]
check "the kills and restarts hit requests in flight" "$?" "paybench retried ${1:-?} times, ${2:-?} connection errors"
# The load itself, not the set-up's funding payments: payments created once
# the load began, acknowledged ones among them, and card charges among them.
n=$(sql -c "SELECT count(*) FROM payments WHERE created_at >= '$load_start'")
nload=$(sql -c "SELECT count(*) FROM crash_acked a JOIN payments p USING (payment_no) WHERE p.created_at >= '$load_start'")
cload=$(sql -c "SELECT count(*) FROM crash_charge c JOIN payments p USING (payment_no) WHERE p.created_at >= '$load_start'")
[ "$n" -gt 0 ] && [ "$nload" -gt 0 ] && [ "$cload" -gt 0 ]
check "the load did something" "$?" "$n payments under load, $nload of them acknowledged, $cload card charges"
# Both nodes end alive and answering, and no process reported memory
# errors or undefined behaviour (sanitizer builds) in its log.
for i in 0 1; do
  curl -fsS -o /dev/null "http://127.0.0.1:${admin_port[$i]}/healthz"
  check "node $i alive at the end" "$?" "see $var/paycore$i.log"
done
! grep -lE 'AddressSanitizer|LeakSanitizer|runtime error:' "$var"/paycore*.log "$var/paysim.log" >/dev/null 2>&1
check "no sanitizer report in the logs" "$?" "$(grep -lE 'AddressSanitizer|LeakSanitizer|runtime error:' "$var"/paycore*.log "$var/paysim.log" 2>/dev/null | tr '\n' ' ')"

log "payments by status: $(sql -c "SELECT string_agg(status || '=' || n, ' ') FROM (SELECT status, count(*) n FROM payments GROUP BY 1 ORDER BY 1) s")"
if [ "$fail" = 0 ]; then
  log "crash test passed ($kills kills, $seconds s)"
else
  log "crash test FAILED; logs in $var"
  trap - EXIT
  cleanup
fi
exit "$fail"

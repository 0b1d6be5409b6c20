#!/usr/bin/env bash
# Starts a 3-node baldurd cluster on loopback in the foreground; Ctrl-C
# stops it (SIGTERM to each node, so the leader hands over first).
# Data goes to ./cluster-data/n1..n3 and survives restarts of the script.
# TLS=1 makes it a mutual-TLS cluster: certificates are created once in
# ./cluster-data/certs (baldurctl certs init) and every port serves TLS.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./bin/baldurd
ctl=./bin/baldurctl
[ -x "$bin" ] && [ -x "$ctl" ] || { echo "build first: make build" >&2; exit 1; }
peers="n1=127.0.0.1:7402,n2=127.0.0.1:7412,n3=127.0.0.1:7422"
certs=cluster-data/certs
if [ "${TLS:-}" = 1 ] && [ ! -f "$certs/ca.pem" ]; then
  "$ctl" certs init --dir "$certs" --nodes n1,n2,n3 >/dev/null
fi
# Outside --dev every node needs the same audit key.
[ -f cluster-data/audit.key ] || { mkdir -p cluster-data && "$ctl" audit keygen --out cluster-data/audit.key >/dev/null; }
pids=()
for i in 1 2 3; do
  base=$((7400 + (i - 1) * 10))
  mkdir -p "cluster-data/n$i"
  tls=()
  scheme=http
  if [ "${TLS:-}" = 1 ]; then
    tls=(--cert-file "$certs/n$i.pem" --key-file "$certs/n$i-key.pem" --client-ca-file "$certs/ca.pem"
      --peer-cert-file "$certs/n$i.pem" --peer-key-file "$certs/n$i-key.pem" --peer-ca-file "$certs/ca.pem")
    scheme=https
  fi
  "$bin" --node-id "n$i" --data-dir "cluster-data/n$i" \
    --grpc-addr "127.0.0.1:$base" --http-addr "127.0.0.1:$((base + 1))" --raft-addr "127.0.0.1:$((base + 2))" \
    --peers "$peers" --audit-key-file cluster-data/audit.key ${tls[@]+"${tls[@]}"} >"cluster-data/n$i.log" 2>&1 &
  pids+=($!)
  echo "n$i: gRPC 127.0.0.1:$base  HTTP $scheme://127.0.0.1:$((base + 1))  log cluster-data/n$i.log"
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
if [ "${TLS:-}" = 1 ]; then
  echo "$ctl --addr 127.0.0.1:7400,127.0.0.1:7410,127.0.0.1:7420 --cacert $certs/ca.pem --cert $certs/client.pem --key $certs/client-key.pem cluster status"
else
  echo "$ctl --addr 127.0.0.1:7400,127.0.0.1:7410,127.0.0.1:7420 cluster status"
fi
wait

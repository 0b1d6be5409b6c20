#!/usr/bin/env bash
# Starts a 3-node baldurd cluster on loopback in the foreground; Ctrl-C
# stops it (SIGTERM to each node, so the leader hands over first).
# Data goes to ./cluster-data/n1..n3 and survives restarts of the script.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./bin/baldurd
[ -x "$bin" ] || { echo "build first: make build" >&2; exit 1; }
peers="n1=127.0.0.1:7402,n2=127.0.0.1:7412,n3=127.0.0.1:7422"
pids=()
for i in 1 2 3; do
  base=$((7400 + (i - 1) * 10))
  mkdir -p "cluster-data/n$i"
  "$bin" --node-id "n$i" --data-dir "cluster-data/n$i" \
    --grpc-addr "127.0.0.1:$base" --http-addr "127.0.0.1:$((base + 1))" --raft-addr "127.0.0.1:$((base + 2))" \
    --peers "$peers" >"cluster-data/n$i.log" 2>&1 &
  pids+=($!)
  echo "n$i: gRPC 127.0.0.1:$base  HTTP http://127.0.0.1:$((base + 1))  log cluster-data/n$i.log"
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
echo "baldurctl --addr 127.0.0.1:7400,127.0.0.1:7410,127.0.0.1:7420 cluster status"
wait

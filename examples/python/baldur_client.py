#!/usr/bin/env python3
"""A non-Go service taking part in baldurd's fleet-wide circuit breakers.

Standard library only. It shows the three things an SDK does, over the REST
gateway:

  1. watch breaker state (GET /v1/circuits:watch, newline-delimited JSON),
  2. decide each call locally from that state (no request to baldurd),
  3. report outcomes in batches (POST /v1/circuits:report) and ask for a
     trial permit while a breaker is HALF_OPEN (POST /v1/circuits/{name}:acquireProbe).

It rides out a node's death or a leader change as the Go SDK does
(docs/api.md, "Errors"): --base takes several nodes; a write carries a
Baldur-Request-Id, and a call that reached no leader (NO_LEADER,
NOT_LEADER, LEADER_UNREACHABLE, LEADER_NOT_READY, a refused connection) or
whose outcome is unknown (RESULT_UNKNOWN, a broken connection) is sent
again, with the same id, to the next node with backoff until its deadline.

Run against `baldurd --dev`:

    python3 examples/python/baldur_client.py --base http://127.0.0.1:7401 --demo

Against a cluster, name its nodes (the first answering is used):

    python3 examples/python/baldur_client.py --base http://10.0.0.1:7401,http://10.0.0.2:7401 --demo

Against a cluster with TLS and tokens (docs/security.md), give the CA and a
token with the service role (and a client certificate if the node asks):

    python3 examples/python/baldur_client.py --base https://10.0.0.1:7401 \
        --cacert certs/ca.pem --token "$(baldurctl token create ... --role service)" --demo

The demo calls a dependency that always fails until the fleet breaker is
OPEN, prints each state it sees and exits 0 once calls are being rejected.
"""

import argparse
import json
import ssl
import sys
import random
import threading
import time
import urllib.error
import urllib.request
import uuid

# How requests reach the node: TLS context and bearer token (set in main).
SSL_CONTEXT = None
TOKEN = ""


def open_url(url, data=None, method="GET", timeout=30, request_id=None):
    headers = {}
    if TOKEN:
        headers["Authorization"] = "Bearer " + TOKEN
    if data is not None:
        headers["Content-Type"] = "application/json"  # writes must say so (415 otherwise)
    if request_id:
        headers["Baldur-Request-Id"] = request_id
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    return urllib.request.urlopen(req, timeout=timeout, context=SSL_CONTEXT)


# Reasons after which a call is sent again: no leader took it, or (for a
# write, which carries its request id and so applies once) its outcome is
# unknown.
RETRY_REASONS = {"NO_LEADER", "NOT_LEADER", "LEADER_UNREACHABLE", "LEADER_NOT_READY",
                 "RESULT_UNKNOWN", "SHUTTING_DOWN"}


class Nodes:
    """The cluster's REST addresses; calls go to the current one and move
    to the next when it cannot be reached or has no leader."""

    def __init__(self, bases):
        self.bases = [b.strip().rstrip("/") for b in bases.split(",") if b.strip()]
        self.current = 0
        self.lock = threading.Lock()

    def base(self):
        with self.lock:
            return self.bases[self.current]

    def next(self, failed):
        with self.lock:
            if self.bases[self.current] == failed:
                self.current = (self.current + 1) % len(self.bases)


def retryable(exc):
    """Whether a failed call may be sent again (see RETRY_REASONS)."""
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code != 503:
            return False
        try:
            return json.loads(exc.read() or b"{}").get("reason") in RETRY_REASONS
        except ValueError:
            return False
    # Refused, reset or timed out: nothing applied, or the write's id makes
    # sending it again safe.
    return isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError))


def post(nodes, path, body, deadline=10.0):
    """POSTs a write with a request id, riding out a failover until the
    deadline (seconds)."""
    data, request_id = json.dumps(body).encode(), uuid.uuid4().hex
    end, backoff = time.time() + deadline, 0.025
    while True:
        base = nodes.base()
        try:
            with open_url(base + path, data=data, method="POST", timeout=max(0.1, end - time.time()),
                          request_id=request_id) as resp:
                return json.loads(resp.read() or b"{}")
        except Exception as exc:
            wait = backoff / 2 + random.uniform(0, backoff / 2)
            if not retryable(exc) or time.time() + wait > end:
                raise
            nodes.next(base)
            time.sleep(wait)
            backoff = min(2 * backoff, 1.0)


class Fleet:
    """Keeps the latest pushed state of every breaker."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.states = {}
        self.kill_switch = False
        self.revision = 0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def watch(self):
        while True:
            base = self.nodes.base()
            try:
                url = "%s/v1/circuits:watch?from_revision=%d" % (base, self.revision)
                with open_url(url) as resp:
                    for line in resp:
                        msg = json.loads(line).get("result", {})
                        with self.lock:
                            if msg.get("snapshot"):
                                self.states = {}
                            for c in msg.get("circuits", []):
                                self.states[c["name"]] = c
                            self.kill_switch = msg.get("kill_switch", False)
                            self.revision = int(msg.get("revision", self.revision))
                            self.changed.notify_all()
            except Exception as exc:  # reconnect and resume from the revision
                print("watch reconnecting: %s" % exc, file=sys.stderr)
                self.nodes.next(base)
                time.sleep(0.5)

    def state(self, name):
        with self.lock:
            return self.states.get(name, {}).get("state", "CLOSED")


class Breaker:
    def __init__(self, fleet, name, instance_id):
        self.fleet, self.name, self.instance_id = fleet, name, instance_id
        self.counts = {"successes": 0, "failures": 0, "rejections": 0, "probe_successes": 0, "probe_failures": 0}
        self.permits, self.probe_window, self.in_probe = 0, 0, 0
        self.lock = threading.Lock()

    def allow(self):
        state = self.fleet.state(self.name)
        with self.lock:
            if self.fleet.kill_switch or state == "CLOSED":
                return True
            if state == "HALF_OPEN" and self.permits > 0:
                self.permits -= 1
                self.in_probe += 1
                return True
            self.counts["rejections"] += 1
        if state == "HALF_OPEN":
            self.acquire_probe()
        return False

    def record(self, ok):
        with self.lock:
            if self.in_probe:
                self.in_probe -= 1
                self.counts["probe_successes" if ok else "probe_failures"] += 1
            else:
                self.counts["successes" if ok else "failures"] += 1

    def acquire_probe(self):
        body = {"instance_id": self.instance_id}
        resp = post(self.fleet.nodes, "/v1/circuits/%s:acquireProbe" % self.name, body)
        if resp.get("granted"):
            with self.lock:
                self.permits += 1
                self.probe_window = int(resp.get("probe_window", 0))

    def take_report(self):
        with self.lock:
            report = dict(self.counts, name=self.name, probe_window=str(self.probe_window))
            for k in self.counts:
                self.counts[k] = 0
        return report if any(report[k] for k in self.counts) else None


def report_loop(fleet, breakers, instance_id, interval=0.1):
    while True:
        time.sleep(interval)
        reports = [r for r in (b.take_report() for b in breakers) if r]
        if reports:
            try:
                post(fleet.nodes, "/v1/circuits:report", {"instance_id": instance_id, "reports": reports})
            except Exception as exc:
                print("report failed: %s" % exc, file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="http://127.0.0.1:7401", help="REST address of a node, or several, comma-separated")
    ap.add_argument("--name", default="py-payments")
    ap.add_argument("--instance", default="python-1")
    ap.add_argument("--demo", action="store_true")
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--cacert", help="PEM CA of the nodes' certificates (https)")
    ap.add_argument("--cert", help="PEM client certificate, for nodes that check them")
    ap.add_argument("--key", help="PEM key of --cert")
    ap.add_argument("--token", default="", help="bearer token (a signed token with the service role)")
    args = ap.parse_args()

    global SSL_CONTEXT, TOKEN
    TOKEN = args.token
    if args.cacert or args.cert:
        SSL_CONTEXT = ssl.create_default_context(cafile=args.cacert)
        if args.cert:
            SSL_CONTEXT.load_cert_chain(args.cert, args.key)

    fleet = Fleet(Nodes(args.base))
    threading.Thread(target=fleet.watch, daemon=True).start()
    breaker = Breaker(fleet, args.name, args.instance)
    threading.Thread(target=report_loop, args=(fleet, [breaker], args.instance), daemon=True).start()

    if not args.demo:
        return 0
    seen = None
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        state = fleet.state(args.name)
        if state != seen:
            print("state %s" % state, flush=True)
            seen = state
        if breaker.allow():
            breaker.record(False)  # the dependency is down
        elif state == "OPEN":
            print("rejecting calls: fleet breaker %s is OPEN" % args.name, flush=True)
            return 0
        time.sleep(0.01)
    print("breaker never opened", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

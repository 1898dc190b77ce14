#!/usr/bin/env python3
"""A Consul HTTP API test server: the part of Consul that balancerd uses, behaving as
Consul documents it. Consul cannot be installed on the build machines, so the Discovery
tests run against this instead. Python 3 standard library only.

    python3 consul_test_server.py [--port 0] [--token TOKEN] [--dc dc1] [--node-address 127.0.0.1]

Prints exactly one line, `consul-test-server listening on 127.0.0.1:PORT`, then serves
until SIGTERM/SIGINT.

Consul API implemented (one agent, node `node1`, datacenter --dc):
  GET /v1/health/service/<name>   ?passing[=bool] ?tag=T (repeatable, all must match,
                                  case-insensitive as in Consul's state store) ?dc=D
                                  ?index=N ?wait=DUR (Go duration; default 5m, max 10m)
      Entries {Node, Service, Checks}; Checks holds the node check `serfHealth` and the
      service's checks. `passing` keeps entries whose checks are all passing (warning is
      not passing). Unknown dc: 500 "No path to datacenter". Headers X-Consul-Index,
      X-Consul-KnownLeader: true, X-Consul-LastContact: 0.
      Blocking: with index >= the result's index, waits until the result's index changes,
      or wait + RandomStagger(wait/16) passes; then answers with the current result and
      index (the same index on a timeout). The result's index is the highest modify index
      of what makes it up, and per service a "last modified" index that deregistration
      also advances, so an emptied result still gets a newer index. Never 0.
  GET /v1/catalog/services       ?dc=D ?index=N ?wait=DUR
      {name: [tags]}: every registered service, healthy or not, with the union of its
      instances' tags (sorted, each once). Blocking as above; the index is the catalog's
      services index, which only service registrations (that change something) and
      deregistrations advance, not check updates.
  Consistency (both GET endpoints): ?stale lets "any server" answer: a follower, whose
      state is the leader's unless the test lost its contact (/test/follower); then its
      answers come from a copy frozen at that moment, and X-Consul-LastContact grows
      with the time since. Headers: X-Consul-LastContact (ms; 0 from the leader),
      X-Consul-KnownLeader, X-Consul-Effective-Consistency (leader or stale). ?stale
      with ?consistent is a 400, as in Consul.
  PUT /v1/agent/service/register  JSON {Name, ID (default Name), Tags, Address, Port,
                                  Meta, Weights (default {Passing:1, Warning:1}),
                                  Check | Checks with TTL, optional CheckID, Name, Status}
      TTL checks start critical unless Status is given and become critical ("TTL expired")
      when not updated within the TTL. Check IDs default to `service:<ID>`, or
      `service:<ID>:<n>` (n from 1) when there are several, as the Consul agent does.
      Re-registering an identical definition writes nothing.
  PUT /v1/agent/service/deregister/<id>
  PUT /v1/agent/check/pass|warn|fail/<checkId>[?note=...]
  PUT /v1/agent/check/update/<checkId>   JSON {Status, Output}
      A check update that changes neither status nor output is not a write (the agent
      only syncs changes to the catalog); it still resets the TTL clock.
  ACL: with --token T, every /v1/ request needs `X-Consul-Token: T` or `?token=T`;
      a missing token answers 403 "Permission denied", a wrong one 403 "ACL not found".

Test controls (not Consul API; never subject to ACLs or outages):
  PUT /test/node-check?status=passing|warning|critical
      Sets the node check serfHealth (affects every service on node1).
  PUT /test/reset-index?to=N
      The global index goes back to N, as after a snapshot restore: every stored modify
      index above N becomes N, so every result index drops. Blocked queries wake up
      (their result's index changed) and answer with the lower index.
  PUT /test/spurious-wakeup?service=NAME
      Advances the service's index without changing its data (an idempotent write).
  PUT /test/outage?mode=500|close|hang|badjson|truncated|slow|index0&seconds=S
      For S seconds, /v1/health/ and /v1/catalog/ reads (including queries already blocked) answer 500
      "rpc error: No cluster leader", or have their connection closed without an answer,
      or are held unanswered until the outage ends (then closed). Agent endpoints keep
      working, as a Consul agent accepts registrations without a leader. seconds=0 ends it.
      Faults that no Consul should produce but a broken proxy or agent in between can:
      badjson answers 200 with the right headers and a body that is not JSON; truncated
      announces the whole body's Content-Length, sends half of it and closes; slow holds
      the read until the outage ends and then answers it properly (a client whose read
      timeout is shorter has given up by then); index0 answers the current result with
      X-Consul-Index: 0.
  PUT /test/follower?contact=lost|ok[&ago=MS][&known-leader=true|false]
      lost: ?stale reads are answered from the catalog as it is now, frozen, with
      X-Consul-LastContact = ago + the milliseconds since; ok: the follower catches up
      (blocked stale queries see the current state). Leader reads are never affected.
  GET /test/stats
      {"HealthQueries": n, "BlockingQueries": n, "CatalogQueries": n, "Index": current
       global index, "Outage": mode or null}
  GET /test/requests
      Every /v1/ request counted: {"Total": n, "Stale": n, "ByPath": {path: n},
       "ByClient": {token: n}}; a request without a token counts as "anonymous". Without
       --token the server checks no ACLs (as Consul with ACLs disabled ignores tokens), so
       clients that send different tokens can be counted apart.
"""

import argparse
import copy
import json
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

MAX_WAIT = 600.0       # Consul: wait is limited to 10 minutes
DEFAULT_WAIT = 300.0   # Consul: defaults to 5 minutes
STATUSES = ("passing", "warning", "critical")

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text):
    """Go's time.ParseDuration (what Consul uses): `10s`, `5m`, `100ms`, `1m30s`."""
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if not m:
            raise ValueError("invalid duration %r" % text)
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total


def parse_bool(text):
    """Go's strconv.ParseBool; a bare flag (`?passing`) is true."""
    if text in ("", "1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(text)


class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Check:
    def __init__(self, check_id, name, status, ttl, service_id="", service_name="", output=""):
        self.check_id = check_id
        self.name = name
        self.status = status
        self.ttl = ttl                  # seconds, or None
        self.service_id = service_id
        self.service_name = service_name
        self.output = output
        self.deadline = time.monotonic() + ttl if ttl else None
        self.create_index = 0
        self.modify_index = 0

    def definition(self):
        return (self.check_id, self.name, self.ttl, self.service_id, self.service_name)

    def json(self, node, tags):
        return {
            "Node": node, "CheckID": self.check_id, "Name": self.name, "Status": self.status,
            "Notes": "", "Output": self.output, "ServiceID": self.service_id,
            "ServiceName": self.service_name, "ServiceTags": tags if self.service_id else [],
            "Type": "ttl" if self.ttl else ("" if self.service_id else "serf"),
            "Definition": {}, "CreateIndex": self.create_index, "ModifyIndex": self.modify_index,
        }


class State:
    """The catalog of one node, with a Raft-like global index bumped by every write.
    All access holds `cond`; waiters are woken by every write."""

    def __init__(self, dc, node_address):
        self.cond = threading.Condition()
        self.dc = dc
        self.node = {"ID": str(uuid.uuid4()), "Node": "node1", "Address": node_address,
                     "Datacenter": dc, "TaggedAddresses": {"lan": node_address, "wan": node_address},
                     "Meta": {"consul-network-segment": ""}}
        self.index = 1
        self.node_create_index = 1
        self.node_modify_index = 1
        self.services = {}              # service ID -> dict (with CreateIndex/ModifyIndex)
        self.checks = {}                # check ID -> Check
        self.service_last_modified = {} # service name -> index of its last write
        self.extinction_index = 1       # last time any service lost its last instance
        self.outage = None              # (mode, until monotonic)
        self.health_queries = 0
        self.blocking_queries = 0
        self.catalog_queries = 0
        self.services_index = 1         # the catalog's services table index
        self.follower = None            # None: in contact; else (frozen copy, lost at, ago ms)
        self.follower_known_leader = True
        self.requests = {"Total": 0, "Stale": 0, "ByPath": {}, "ByClient": {}}
        serf = Check("serfHealth", "Serf Health Status", "passing", None, output="Agent alive and reachable")
        serf.create_index = serf.modify_index = 1
        self.checks["serfHealth"] = serf

    # --- writes (caller holds cond) ---

    def _write(self):
        self.index += 1
        self.cond.notify_all()
        return self.index

    def _touch_service(self, name, idx):
        self.service_last_modified[name] = idx

    def _touch_node(self, idx):
        for svc in self.services.values():
            self._touch_service(svc["Service"], idx)

    def set_check(self, check_id, status, output):
        check = self.checks.get(check_id)
        if check is None:
            raise ApiError(404, 'Unknown check ID "%s". Ensure that the check ID is passed, not the check name.' % check_id)
        if status not in STATUSES:
            raise ApiError(400, "Invalid check status: %r" % status)
        if check.ttl:
            check.deadline = time.monotonic() + check.ttl
        if check.status == status and check.output == output:
            return  # nothing for the agent to sync: no Raft write
        check.status = status
        check.output = output
        idx = self._write()
        check.modify_index = idx
        if check.service_id:
            self._touch_service(check.service_name, idx)
        else:
            self.node_modify_index = idx
            self._touch_node(idx)

    def register(self, body):
        if not isinstance(body, dict):
            raise ApiError(400, "Request decode failed: expected a JSON object")
        name = body.get("Name") or ""
        if not name:
            raise ApiError(400, "Missing service name")
        sid = body.get("ID") or name
        port = body.get("Port") or 0
        if not isinstance(port, int) or port < 0 or port > 65535:
            raise ApiError(400, "Invalid Port")
        weights = body.get("Weights") or {"Passing": 1, "Warning": 1}
        if weights.get("Passing", 0) < 1:
            raise ApiError(400, "Passing must be greater than 0")
        weights = {"Passing": weights.get("Passing", 1), "Warning": weights.get("Warning", 1)}
        service = {
            "ID": sid, "Service": name, "Tags": list(body.get("Tags") or []),
            "Address": body.get("Address") or "", "Meta": dict(body.get("Meta") or {}),
            "Port": port, "Weights": weights, "EnableTagOverride": bool(body.get("EnableTagOverride", False)),
            "TaggedAddresses": {}, "Proxy": {"MeshGateway": {}, "Expose": {}}, "Connect": {},
            "PeerName": "", "Namespace": "", "Partition": "",
        }
        defs = []
        if body.get("Check"):
            defs.append(body["Check"])
        defs.extend(body.get("Checks") or [])
        new_checks = []
        for i, d in enumerate(defs):
            if not d.get("TTL"):
                raise ApiError(400, "This test server supports TTL checks only")
            try:
                ttl = parse_duration(d["TTL"])
            except ValueError as e:
                raise ApiError(400, "Invalid check: %s" % e)
            cid = d.get("CheckID") or d.get("ID") or ("service:%s" % sid if len(defs) == 1 else "service:%s:%d" % (sid, i + 1))
            status = d.get("Status") or "critical"
            if status not in STATUSES:
                raise ApiError(400, "Invalid check status: %r" % status)
            cname = d.get("Name") or "Service '%s' check" % name
            new_checks.append(Check(cid, cname, status, ttl, sid, name))

        old = self.services.get(sid)
        old_checks = {c.check_id: c for c in self.checks.values() if c.service_id == sid}
        same_service = old is not None and {k: v for k, v in old.items() if k not in ("CreateIndex", "ModifyIndex")} == service
        same_checks = (sorted(c.definition() for c in old_checks.values()) == sorted(c.definition() for c in new_checks))
        if same_service and same_checks:
            for c in old_checks.values():   # re-registration refreshes, writes nothing
                if c.ttl:
                    c.deadline = time.monotonic() + c.ttl
            return
        idx = self._write()
        if not same_service:
            self.services_index = idx
        service["CreateIndex"] = old["CreateIndex"] if old else idx
        service["ModifyIndex"] = idx
        self.services[sid] = service
        for cid in old_checks:
            del self.checks[cid]
        for c in new_checks:
            prev = old_checks.get(c.check_id)
            if prev is not None and prev.definition() == c.definition():
                c.status, c.output, c.create_index = prev.status, prev.output, prev.create_index
            else:
                c.create_index = idx
            c.modify_index = idx
            self.checks[c.check_id] = c
        if old is not None and old["Service"] != name:
            self._touch_service(old["Service"], idx)
            self._maybe_extinct(old["Service"], idx)
        self._touch_service(name, idx)

    def _maybe_extinct(self, name, idx):
        if not any(s["Service"] == name for s in self.services.values()):
            self.extinction_index = idx

    def deregister(self, sid):
        svc = self.services.get(sid)
        if svc is None:
            raise ApiError(404, 'Unknown service ID "%s". Ensure that the service ID is passed, not the service name.' % sid)
        idx = self._write()
        self.services_index = idx
        del self.services[sid]
        for cid in [c.check_id for c in self.checks.values() if c.service_id == sid]:
            del self.checks[cid]
        self._touch_service(svc["Service"], idx)
        self._maybe_extinct(svc["Service"], idx)

    def expire_ttls(self):
        now = time.monotonic()
        for c in list(self.checks.values()):
            if c.ttl and c.deadline is not None and now >= c.deadline:
                c.deadline = None   # expired once; the next update re-arms it
                if c.status != "critical" or c.output != "TTL expired":
                    self.set_check_expired(c)

    def set_check_expired(self, c):
        c.status, c.output = "critical", "TTL expired"
        idx = self._write()
        c.modify_index = idx
        self._touch_service(c.service_name, idx)

    def spurious(self, name):
        idx = self._write()
        self._touch_service(name, idx)

    def reset_index(self, to):
        to = max(1, to)
        self.index = to
        self.node_create_index = min(self.node_create_index, to)
        self.node_modify_index = min(self.node_modify_index, to)
        self.extinction_index = min(self.extinction_index, to)
        self.services_index = min(self.services_index, to)
        for svc in self.services.values():
            svc["CreateIndex"] = min(svc["CreateIndex"], to)
            svc["ModifyIndex"] = min(svc["ModifyIndex"], to)
        for c in self.checks.values():
            c.create_index = min(c.create_index, to)
            c.modify_index = min(c.modify_index, to)
        for name in self.service_last_modified:
            self.service_last_modified[name] = min(self.service_last_modified[name], to)
        self.cond.notify_all()

    # --- reads (caller holds cond) ---

    def health(self, name, tags, passing):
        """(index, entries) of /v1/health/service/<name>."""
        node_check = self.checks["serfHealth"]
        node_json = dict(self.node, CreateIndex=self.node_create_index, ModifyIndex=self.node_modify_index)
        entries = []
        index = 0
        exists = False
        for svc in sorted(self.services.values(), key=lambda s: s["ID"]):
            if svc["Service"] != name:
                continue
            exists = True
            svc_checks = [c for c in self.checks.values() if c.service_id == svc["ID"]]
            for c in svc_checks + [node_check]:
                index = max(index, c.modify_index)
            index = max(index, svc["ModifyIndex"], self.node_modify_index)
            lowered = [t.lower() for t in svc["Tags"]]
            if any(t.lower() not in lowered for t in tags):
                continue
            checks = [node_check] + sorted(svc_checks, key=lambda c: c.check_id)
            if passing and any(c.status != "passing" for c in checks):
                continue
            entries.append({"Node": node_json, "Service": dict(svc),
                            "Checks": [c.json(self.node["Node"], svc["Tags"]) for c in checks]})
        index = max(index, self.service_last_modified.get(name, 0))
        if not exists:
            # Consul answers a missing service with its "last extinction" index.
            index = max(index, self.extinction_index) if name in self.service_last_modified else self.extinction_index
        return max(index, 1), entries

    def catalog_services(self):
        """(index, {name: tags}) of /v1/catalog/services."""
        result = {}
        for svc in self.services.values():
            result.setdefault(svc["Service"], set()).update(svc["Tags"])
        return max(self.services_index, 1), {name: sorted(tags) for name, tags in result.items()}

    # --- the follower that ?stale reads may reach (caller holds cond) ---

    def lose_contact(self, ago_ms, known_leader):
        frozen = copy.copy(self)
        frozen.services = copy.deepcopy(self.services)
        frozen.checks = copy.deepcopy(self.checks)
        frozen.service_last_modified = dict(self.service_last_modified)
        frozen.follower = None
        self.follower = (frozen, time.monotonic(), ago_ms)
        self.follower_known_leader = known_leader
        self.cond.notify_all()

    def regain_contact(self):
        self.follower = None
        self.follower_known_leader = True
        self.cond.notify_all()

    def view(self, stale):
        """The state a read sees and its consistency headers."""
        if not stale:
            return self, (("X-Consul-KnownLeader", "true"), ("X-Consul-LastContact", "0"),
                          ("X-Consul-Effective-Consistency", "leader"))
        if self.follower is None:
            return self, (("X-Consul-KnownLeader", "true"), ("X-Consul-LastContact", "0"),
                          ("X-Consul-Effective-Consistency", "stale"))
        frozen, lost_at, ago = self.follower
        contact = int(ago + (time.monotonic() - lost_at) * 1000)
        return frozen, (("X-Consul-KnownLeader", "true" if self.follower_known_leader else "false"),
                        ("X-Consul-LastContact", str(contact)), ("X-Consul-Effective-Consistency", "stale"))

    def count_request(self, path, token, stale):
        r = self.requests
        r["Total"] += 1
        if stale:
            r["Stale"] += 1
        r["ByPath"][path] = r["ByPath"].get(path, 0) + 1
        client = token or "anonymous"
        r["ByClient"][client] = r["ByClient"].get(client, 0) + 1

    def outage_mode(self):
        if self.outage and time.monotonic() < self.outage[1]:
            return self.outage[0]
        self.outage = None
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Consul-Test-Server"
    state = None        # set in main
    token = None

    def log_message(self, format, *args):
        pass    # quiet: tests read stdout for the one startup line only

    # --- plumbing ---

    def setup(self):
        super().setup()
        # Go's net package (so Consul) sets TCP_NODELAY on every connection. Without it a
        # response written in two segments waits for the client's delayed ACK (~40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, status, body, content_type="text/plain; charset=utf-8", headers=()):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        # Head and body in one write (what end_headers does, plus the body).
        self._headers_buffer.append(b"\r\n" + data)
        self.flush_headers()

    def _json(self, status, obj, headers=()):
        self._send(status, json.dumps(obj), "application/json", headers)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self):
        raw = self._body()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ApiError(400, "Request decode failed: %s" % e)

    def _drop(self):
        """Close the connection without answering."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass

    def _dispatch(self, method):
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            if path.startswith("/test/"):
                return self._test(method, path, query)
            if path.startswith("/v1/"):
                with self.state.cond:
                    self.state.count_request(path, self._token(query), "stale" in query)
                self._check_acl(query)
                return self._api(method, path, query)
            raise ApiError(404, "404 page not found")
        except ApiError as e:
            self._send(e.status, e.message)

    def do_GET(self):
        self._dispatch("GET")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_POST(self):
        self._dispatch("POST")

    def _token(self, query):
        given = self.headers.get("X-Consul-Token") or (query.get("token") or [None])[0]
        if given is None:
            auth = self.headers.get("Authorization") or ""
            given = auth[7:] if auth.startswith("Bearer ") else None
        return given

    def _check_acl(self, query):
        if self.token is None:
            return
        given = self._token(query)
        if given is None or given == "":
            raise ApiError(403, "Permission denied")   # anonymous token has no rights
        if given != self.token:
            raise ApiError(403, "ACL not found")

    # --- Consul API ---

    def _api(self, method, path, query):
        st = self.state
        if path.startswith("/v1/health/service/"):
            if method != "GET":
                raise ApiError(405, "method %s not allowed" % method)
            return self._health(unquote(path[len("/v1/health/service/"):]), query)
        if path == "/v1/catalog/services":
            if method != "GET":
                raise ApiError(405, "method %s not allowed" % method)
            return self._catalog_services(query)
        if method not in ("PUT", "POST") and path.startswith("/v1/agent/"):
            raise ApiError(405, "method %s not allowed" % method)
        if path == "/v1/agent/service/register":
            body = self._json_body()
            with st.cond:
                st.register(body)
            return self._send(200, "")
        if path.startswith("/v1/agent/service/deregister/"):
            self._body()
            with st.cond:
                st.deregister(unquote(path[len("/v1/agent/service/deregister/"):]))
            return self._send(200, "")
        m = re.match(r"^/v1/agent/check/(pass|warn|fail|update)/(.+)$", path)
        if m:
            verb, cid = m.group(1), unquote(m.group(2))
            if verb == "update":
                body = self._json_body()
                status, output = body.get("Status", ""), body.get("Output", "")
            else:
                self._body()
                status = {"pass": "passing", "warn": "warning", "fail": "critical"}[verb]
                output = (query.get("note") or [""])[0]
            with st.cond:
                st.set_check(cid, status, output)
            return self._send(200, "")
        raise ApiError(404, "404 page not found")

    def _outage_answer(self, mode, compute, stale):
        """Answers (or does not) as the outage mode says. Holds no lock. `compute(view)`
        gives the (index, result) a healthy read would answer with."""
        st = self.state
        if mode == "500":
            self._send(500, "rpc error: No cluster leader")
        elif mode == "close":
            self._drop()
        elif mode in ("hang", "slow"):
            # Never answer while the outage lasts; then drop the connection (hang) or
            # answer as if nothing had happened (slow).
            with st.cond:
                while st.outage_mode() == mode:
                    st.cond.wait(0.05)
                view, headers = st.view(stale)
                index, result = compute(view)
            if mode == "hang":
                self._drop()
            else:
                self._json(200, result, headers=(("X-Consul-Index", str(index)),) + tuple(headers))
        else:
            with st.cond:
                view, headers = st.view(stale)
                index, result = compute(view)
            if mode == "index0":
                return self._json(200, result, headers=(("X-Consul-Index", "0"),) + tuple(headers))
            data = json.dumps(result).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Consul-Index", str(index))
            for k, v in headers:
                self.send_header(k, v)
            if mode == "badjson":
                # The right length, the wrong bytes: what a proxy's error page or a
                # mangled answer looks like to a JSON decoder.
                bad = b"<html>502 Bad Gateway</html>"
                data = (bad * (len(data) // len(bad) + 1))[:len(data)]
                self._headers_buffer.append(b"\r\n" + data)
                self.flush_headers()
            else:  # truncated: half the body, then the connection closes
                self._headers_buffer.append(b"\r\n" + data[:len(data) // 2])
                self.flush_headers()
                self._drop()

    def _read_options(self, query):
        """(min_index, wait seconds with Consul's stagger, stale) of a read."""
        dc = (query.get("dc") or [""])[0]
        if dc and dc != self.state.dc:
            raise ApiError(500, "No path to datacenter")
        if "stale" in query and "consistent" in query:
            raise ApiError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        try:
            min_index = int((query.get("index") or ["0"])[0] or "0")
        except ValueError:
            raise ApiError(400, "Invalid index")
        try:
            wait = parse_duration((query.get("wait") or [""])[0])
        except ValueError:
            raise ApiError(400, "Invalid wait time")
        if wait <= 0:
            wait = DEFAULT_WAIT
        wait = min(wait, MAX_WAIT)
        # Consul: MaxQueryTime += lib.RandomStagger(MaxQueryTime / 16)
        wait += random.random() * (wait / 16)
        return min_index, wait, "stale" in query

    def _blocking_read(self, query, compute, counter):
        """Answers a read of `compute(view) -> (index, result)` as a blocking query."""
        st = self.state
        min_index, wait, stale = self._read_options(query)
        with st.cond:
            setattr(st, counter, getattr(st, counter) + 1)
            mode = st.outage_mode()
            if mode is None:
                view, headers = st.view(stale)
                index, result = compute(view)
                if min_index > 0 and min_index >= index:
                    st.blocking_queries += 1
                    start_index = index
                    deadline = time.monotonic() + wait
                    while True:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        st.cond.wait(min(remaining, 0.25))
                        mode = st.outage_mode()
                        if mode is not None:
                            break
                        view, headers = st.view(stale)
                        index, result = compute(view)
                        if index != start_index:
                            break
                    if mode is None:
                        view, headers = st.view(stale)
                        index, result = compute(view)
        if mode is not None:
            return self._outage_answer(mode, compute, stale)
        self._json(200, result, headers=(("X-Consul-Index", str(index)),) + tuple(headers))

    def _health(self, name, query):
        try:
            passing = parse_bool(query["passing"][-1]) if "passing" in query else False
        except ValueError:
            raise ApiError(400, "Invalid value for ?passing")
        tags = query.get("tag", [])
        self._blocking_read(query, lambda view: view.health(name, tags, passing), "health_queries")

    def _catalog_services(self, query):
        self._blocking_read(query, lambda view: view.catalog_services(), "catalog_queries")

    # --- test controls ---

    def _test(self, method, path, query):
        st = self.state
        q = lambda k, d=None: (query.get(k) or [d])[0]
        if path == "/test/stats":
            with st.cond:
                return self._json(200, {"HealthQueries": st.health_queries, "BlockingQueries": st.blocking_queries,
                                        "CatalogQueries": st.catalog_queries, "Index": st.index,
                                        "Outage": st.outage_mode()})
        if path == "/test/requests":
            with st.cond:
                return self._json(200, st.requests)
        self._body()
        if method != "PUT":
            raise ApiError(405, "method %s not allowed" % method)
        with st.cond:
            if path == "/test/node-check":
                st.set_check("serfHealth", q("status", ""), "Agent alive and reachable" if q("status") == "passing" else "Agent not live or unreachable")
            elif path == "/test/reset-index":
                st.reset_index(int(q("to", "1")))
            elif path == "/test/follower":
                contact = q("contact", "")
                if contact == "lost":
                    st.lose_contact(float(q("ago", "0")), q("known-leader", "true") != "false")
                elif contact == "ok":
                    st.regain_contact()
                else:
                    raise ApiError(400, "contact must be lost or ok")
            elif path == "/test/spurious-wakeup":
                st.spurious(q("service", ""))
            elif path == "/test/outage":
                mode, seconds = q("mode", ""), float(q("seconds", "0"))
                if mode not in ("500", "close", "hang", "badjson", "truncated", "slow", "index0"):
                    raise ApiError(400, "mode must be 500, close, hang, badjson, truncated, slow or index0")
                st.outage = (mode, time.monotonic() + seconds) if seconds > 0 else None
                st.cond.notify_all()
            else:
                raise ApiError(404, "unknown test control")
        self._send(200, "")


def main():
    parser = argparse.ArgumentParser(description="Consul API test server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=None)
    parser.add_argument("--dc", default="dc1")
    parser.add_argument("--node-address", default="127.0.0.1")
    args = parser.parse_args()

    state = State(args.dc, args.node_address)
    Handler.state = state
    Handler.token = args.token

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True

    def ttl_reaper():
        while True:
            time.sleep(0.05)
            with state.cond:
                state.expire_ttls()

    threading.Thread(target=ttl_reaper, daemon=True).start()

    def stop(signum, frame):
        # shutdown() waits for serve_forever to return, so it runs on another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("consul-test-server listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()


if __name__ == "__main__":
    main()

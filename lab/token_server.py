#!/usr/bin/env python3
"""Lab token endpoint: a tiny fake of the ECR (and ECR Public) GetAuthorizationToken API.

moto's ECR tokens never change and expired in 2015, so tests of caching, expiry and
rotation use this server instead. It speaks just enough of the AWS JSON 1.1 protocol for
the real `aws-sdk-ecr` / `aws-sdk-ecrpublic` clients and the AWS CLI, pointed at it with
AWS_ENDPOINT_URL=http://127.0.0.1:<port> and any dummy static credentials:

  POST /  X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken
      -> {"authorizationData":[{"authorizationToken": base64("AWS:<password>"),
                                "expiresAt": <epoch seconds, float>,
                                "proxyEndpoint": "https://<account>.dkr.ecr.<region>.amazonaws.com"}]}
  POST /  X-Amz-Target: SpencerFrontendService.GetAuthorizationToken   (ECR Public)
      -> {"authorizationData": {"authorizationToken": ..., "expiresAt": ...}}

The region comes from the SigV4 Authorization header's credential scope (signatures are
not verified). The password is ~2.5 KB and random-looking like a real ECR one; it stays
the same until a *rotation*; every issued token has expiresAt = now + ttl.

  POST /  Action=AssumeRole (STS, query protocol)
      -> temporary credentials whose access key id is derived from the role ARN
         ("ASIA" + 16 hex digits of its SHA-1), so tests can see which identity signed
         each GetAuthorizationToken call.

Control endpoints (JSON, for tests):
  GET  /_lab/calls     -> {"calls": N, "issued": M, "throttled": T, "held": H,
                           "by_region": {"eu-west-1": n, ...},
                           "callers": [access key id of each call, in order],
                           "assumed_roles": [role ARN of each AssumeRole call, in order]}
                          calls counts every GetAuthorizationToken request (failed, throttled
                          and held ones too)
  GET  /_lab/config    -> the current config
  POST /_lab/config    <- any of {"ttl_seconds": int, "fail": null|"unavailable"|"denied",
                                  "delay_ms": int, "rotate_on_issue": bool,
                                  "throttle": int, "black_hole": bool, "fips": bool}
  POST /_lab/rotate    -> {"password": <new password>}
  GET  /_lab/password  -> {"password": <current password>}
  POST /_lab/reset     -> zero the call counters
  GET  /_lab/health    -> {"ok": true}

Modes (all off by default; the control endpoints keep answering in every mode):
  throttle N    the next N GetAuthorizationToken calls answer HTTP 400 ThrottlingException
                (JSON protocol `__type`), then calls succeed again; "throttled" counts them.
                A large N throttles "forever".
  black_hole    a black-holed AWS: GetAuthorizationToken requests are accepted and read,
                counted ("calls", "held") and then never answered; the connection is held
                open until the server stops. Turning it off only affects later requests.
  fips          proxyEndpoint names the FIPS registry host (dkr.ecr-fips), as ECR's FIPS
                endpoint does; used with a client whose explicit endpoint is this server.

With --htpasswd FILE the server (re)writes FILE atomically with user AWS and the current
password at start and on every rotation, so a docker-registry (CNCF distribution 2.8,
which re-reads its htpasswd file whenever the file's mtime changes) accepts only the
current password. bcrypt only looks at the first 72 bytes of a password and Apache's
`htpasswd` refuses passwords over 255 bytes, so the hash is made from the 72-byte prefix:
the registry then accepts exactly what it would accept for the full password.

Listens on 127.0.0.1 only. With --port 0 the first stdout line is `PORT <n>`.
python3 standard library only (plus the `htpasswd` program for --htpasswd).
"""

import argparse
import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"
ECR_PUBLIC_TARGET = "SpencerFrontendService.GetAuthorizationToken"
SCOPE_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/")
CALLER_RE = re.compile(r"Credential=([^/,\s]+)/")
BCRYPT_MAX = 72


def new_password(ttl):
    """A random-looking ~2.5 KB password shaped like a real ECR one."""
    inner = {
        "payload": base64.b64encode(os.urandom(1200)).decode(),
        "datakey": base64.b64encode(os.urandom(150)).decode(),
        "version": "2",
        "type": "DATA_KEY",
        "expiration": int(time.time() + ttl),
    }
    return base64.b64encode(json.dumps(inner, separators=(",", ":")).encode()).decode()


class State:
    def __init__(self, account, ttl, htpasswd):
        self.lock = threading.Lock()
        self.account = account
        self.htpasswd = htpasswd
        self.config = {
            "ttl_seconds": ttl,
            "fail": None,
            "delay_ms": 0,
            "rotate_on_issue": False,
            "throttle": 0,
            "black_hole": False,
            "fips": False,
            "date_offset_s": 0,
        }
        # Set when the server stops: releases the requests a black hole holds.
        self.stopping = threading.Event()
        self.calls = 0
        self.issued = 0
        self.throttled = 0
        self.held = 0
        self.by_region = {}
        self.callers = []
        self.assumed_roles = []
        self.last_mtime_ns = 0
        self.password = None
        self.rotate()

    def rotate(self):
        with self.lock:
            password = new_password(self.config["ttl_seconds"])
            if self.htpasswd:
                self._write_htpasswd(password)
            self.password = password
            return password

    def _write_htpasswd(self, password):
        proc = subprocess.run(
            ["htpasswd", "-niB", "AWS"],
            input=password[:BCRYPT_MAX].encode(),
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError("htpasswd failed: " + proc.stderr.decode(errors="replace"))
        tmp = "%s.tmp.%d" % (self.htpasswd, os.getpid())
        with open(tmp, "wb") as f:
            f.write(proc.stdout.strip() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        # The registry reloads when the mtime differs; file timestamps are only
        # jiffy-precise, so make sure two quick rotations never share one.
        mtime = max(time.time_ns(), self.last_mtime_ns + 1_000_000)
        os.utime(tmp, ns=(mtime, mtime))
        self.last_mtime_ns = mtime
        os.replace(tmp, self.htpasswd)

    def update_config(self, changes):
        allowed = {
            "ttl_seconds": int,
            "fail": (type(None), str),
            "delay_ms": int,
            "rotate_on_issue": bool,
            "throttle": int,
            "black_hole": bool,
            "fips": bool,
            "date_offset_s": int,
        }
        for key, value in changes.items():
            if key not in allowed or not isinstance(value, allowed[key]):
                raise ValueError("bad config field %r=%r" % (key, value))
            if key == "fail" and value not in (None, "unavailable", "denied"):
                raise ValueError("fail must be null, 'unavailable' or 'denied'")
            if key in ("throttle", "delay_ms", "ttl_seconds") and (isinstance(value, bool) or value < 0):
                raise ValueError("%s must be a number >= 0" % key)
        with self.lock:
            self.config.update(changes)
            return dict(self.config)

    def count(self, region, caller):
        """Counts one GetAuthorizationToken call; returns the config and what to do with
        the call: "hold" (black hole), "throttle" (one of the N throttled) or "answer"."""
        with self.lock:
            self.calls += 1
            self.callers.append(caller)
            self.by_region[region] = self.by_region.get(region, 0) + 1
            if self.config["black_hole"]:
                self.held += 1
                return dict(self.config), "hold"
            if self.config["throttle"] > 0:
                self.config["throttle"] -= 1
                self.throttled += 1
                return dict(self.config), "throttle"
            return dict(self.config), "answer"

    def issue(self, rotate_first):
        if rotate_first:
            self.rotate()
        with self.lock:
            self.issued += 1
            token = base64.b64encode(("AWS:" + self.password).encode()).decode()
            return token, time.time() + self.config["ttl_seconds"]

    def calls_json(self):
        with self.lock:
            return {
                "calls": self.calls,
                "issued": self.issued,
                "throttled": self.throttled,
                "held": self.held,
                "by_region": dict(self.by_region),
                "callers": list(self.callers),
                "assumed_roles": list(self.assumed_roles),
            }

    def reset(self):
        with self.lock:
            self.calls = 0
            self.issued = 0
            self.throttled = 0
            self.held = 0
            self.by_region = {}
            self.callers = []
            self.assumed_roles = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ecr-auth-lab-token-server"
    state = None  # set in main()

    def date_time_string(self, timestamp=None):
        # The `Date` header, shifted by `date_offset_s`: a server whose clock is
        # off, to test clock-skew diagnosis.
        # No lock: callers hold it while answering, and a dict read is atomic.
        offset = self.state.config.get("date_offset_s", 0)
        return super().date_time_string((timestamp or time.time()) + offset)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))

    def _body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status, obj, content_type="application/json"):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", "lab-%d" % time.time_ns())
        self.end_headers()
        self.wfile.write(body)

    def _aws_error(self, status, kind, message):
        self.send_response(status)
        body = json.dumps({"__type": kind, "message": message}).encode()
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-ErrorType", kind)
        self.send_header("x-amzn-RequestId", "lab-%d" % time.time_ns())
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._body()
        st = self.state
        if self.path == "/_lab/calls":
            self._send(200, st.calls_json())
        elif self.path == "/_lab/password":
            with st.lock:
                self._send(200, {"password": st.password})
        elif self.path == "/_lab/config":
            with st.lock:
                self._send(200, dict(st.config))
        elif self.path == "/_lab/health":
            self._send(200, {"ok": True})
        else:
            self._send(404, {"error": "no such path " + self.path})

    def do_POST(self):
        body = self._body()
        st = self.state
        if self.path == "/_lab/config":
            try:
                self._send(200, st.update_config(json.loads(body or b"{}")))
            except (ValueError, AttributeError) as e:
                self._send(400, {"error": str(e)})
        elif self.path == "/_lab/rotate":
            self._send(200, {"password": st.rotate()})
        elif self.path == "/_lab/reset":
            st.reset()
            self._send(200, st.calls_json())
        elif self.path.split("?")[0] == "/" and not self.headers.get("X-Amz-Target"):
            self._sts(body)
        elif self.path.split("?")[0] == "/":
            self._aws(body)
        else:
            self._send(404, {"error": "no such path " + self.path})

    def _aws(self, body):
        target = self.headers.get("X-Amz-Target", "")
        if target not in (ECR_TARGET, ECR_PUBLIC_TARGET):
            self._aws_error(400, "UnknownOperationException", "lab token server: unknown target %r" % target)
            return
        match = SCOPE_RE.search(self.headers.get("Authorization", ""))
        region = match.group(1) if match else "us-east-1"
        caller = CALLER_RE.search(self.headers.get("Authorization", ""))
        config, action = self.state.count(region, caller.group(1) if caller else "")
        if action == "hold":
            # Never answer: hold the connection until the server stops, then drop it.
            self.state.stopping.wait()
            self.close_connection = True
            return
        if action == "throttle":
            self._aws_error(400, "ThrottlingException", "lab token server: Rate exceeded")
            return
        if config["delay_ms"]:
            time.sleep(config["delay_ms"] / 1000.0)
        if config["fail"] == "unavailable":
            self._aws_error(503, "ServiceUnavailableException", "lab token server: service unavailable")
            return
        if config["fail"] == "denied":
            self._aws_error(
                400,
                "AccessDeniedException",
                "User: arn:aws:iam::%s:user/lab is not authorized to perform: ecr:GetAuthorizationToken"
                % self.state.account,
            )
            return
        token, expires_at = self.state.issue(config["rotate_on_issue"])
        if target == ECR_PUBLIC_TARGET:
            data = {"authorizationData": {"authorizationToken": token, "expiresAt": expires_at}}
        else:
            dkr = "dkr.ecr-fips" if config["fips"] else "dkr.ecr"
            endpoint = "https://%s.%s.%s.amazonaws.com" % (self.state.account, dkr, region)
            data = {
                "authorizationData": [
                    {"authorizationToken": token, "expiresAt": expires_at, "proxyEndpoint": endpoint}
                ]
            }
        self._send(200, data, "application/x-amz-json-1.1")


    def _sts(self, body):
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        action = form.get("Action", [""])[0]
        if action == "GetCallerIdentity":
            caller = CALLER_RE.search(self.headers.get("Authorization", ""))
            akid = caller.group(1) if caller else ""
            arn = "arn:aws:iam::%s:user/lab-%s" % (self.state.account, akid[-4:])
            self._send_xml(
                200,
                '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                "<GetCallerIdentityResult><Arn>%s</Arn><UserId>AIDALAB</UserId><Account>%s</Account>"
                "</GetCallerIdentityResult><ResponseMetadata><RequestId>lab</RequestId>"
                "</ResponseMetadata></GetCallerIdentityResponse>" % (arn, self.state.account),
            )
            return
        if action != "AssumeRole":
            self._send_xml(400, "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidAction</Code>"
                           "<Message>lab token server: only AssumeRole and GetCallerIdentity</Message></Error></ErrorResponse>")
            return
        role = form.get("RoleArn", [""])[0]
        session = form.get("RoleSessionName", ["lab"])[0]
        with self.state.lock:
            self.state.assumed_roles.append(role)
        akid = "ASIA" + hashlib.sha1(role.encode()).hexdigest()[:16].upper()
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        account = (role.split(":") + [""] * 5)[4]
        self._send_xml(
            200,
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
            "<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>lab-secret-%s</SecretAccessKey>"
            "<SessionToken>lab-session-%s</SessionToken><Expiration>%s</Expiration></Credentials>"
            "<AssumedRoleUser><AssumedRoleId>AROALAB:%s</AssumedRoleId>"
            "<Arn>arn:aws:sts::%s:assumed-role/lab/%s</Arn></AssumedRoleUser>"
            "</AssumeRoleResult><ResponseMetadata><RequestId>lab</RequestId></ResponseMetadata>"
            "</AssumeRoleResponse>" % (akid, akid, akid, expires, session, account, session),
        )

    def _send_xml(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick one, print `PORT <n>`)")
    parser.add_argument("--account", default="123456789012", help="account id in proxyEndpoint")
    parser.add_argument("--ttl", type=int, default=43200, help="token lifetime in seconds (default 12 h)")
    parser.add_argument("--htpasswd", help="keep this htpasswd file in sync (user AWS, current password)")
    args = parser.parse_args()

    Handler.state = State(args.account, args.ttl, os.path.abspath(args.htpasswd) if args.htpasswd else None)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print("PORT %d" % server.server_address[1], flush=True)

    def stop(signum, frame):
        Handler.state.stopping.set()
        # shutdown() waits for serve_forever() to return, so it must not run on this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

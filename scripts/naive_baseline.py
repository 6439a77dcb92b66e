"""The naive baseline of scripts/bench.sh: the `/execute` contract served by spawning
`python3 -I -c` per request (the cheapest isolation a subprocess gives: a fresh interpreter, no
site-packages, no environment), with the standard library's threading HTTP server.

Usage: python3 naive_baseline.py  (prints `listening on PORT`, serves until killed)
"""

import json
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Runs in the child: reads {"code", "data"} on stdin, prints {"result"}.
RUNNER = """
import json, sys
request = json.load(sys.stdin)
scope = {"data": request.get("data") or {}}
exec(request["code"], scope)
print(json.dumps({"result": scope.get("result")}))
"""


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as pyexec has, so that the load generator measures the same thing.
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        child = subprocess.run(
            [sys.executable, "-I", "-c", RUNNER],
            input=body,
            capture_output=True,
            timeout=30,
        )
        if child.returncode == 0:
            reply = {"success": True, **json.loads(child.stdout), "executions_left": 0}
        else:
            reply = {"success": False, "error": child.stderr.decode(errors="replace")}
        payload = json.dumps(reply, separators=(",", ":")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()

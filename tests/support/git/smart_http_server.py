#!/usr/bin/env python3
"""Serve the bare repositories under a directory over git's smart HTTP protocol.

Runs `git http-backend` as a CGI program for every request, behind HTTP Basic authentication:
with a token (environment variable GIT_TEST_TOKEN), only user `x-access-token` with that password
gets in, anyone else receives 401 with a Basic challenge, as GitHub does.

Usage: smart_http_server.py ROOT [--port N] [--exit-with-stdin] [--tls CERT KEY]

With --tls, serves HTTPS with the PEM certificate chain CERT and its key KEY.

Prints the port it listens on (127.0.0.1) as the first line of stdout, then serves until killed
or, with --exit-with-stdin, until its stdin closes (so a test that dies leaves no server behind).

While a file named `.truncate-upload-pack` exists in ROOT, responses to fetch requests
(POST .../git-upload-pack) are cut off halfway, to test what a broken transfer leaves behind.

Python standard library only.
"""

import argparse
import base64
import hmac
import http.server
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

USER = "x-access-token"


class Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 with Content-Length on every response, so clients can keep the connection.
    protocol_version = "HTTP/1.1"
    # Responses go out at once (see `reply`); nothing to gain from delaying small segments.
    disable_nagle_algorithm = True
    root = "."
    token = None

    def do_GET(self):
        self.serve_git()

    def do_POST(self):
        self.serve_git()

    def log_message(self, format, *args):
        if os.environ.get("GIT_TEST_SERVER_LOG"):
            sys.stderr.write("%.3f %s\n" % (time.time(), format % args))

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    # Trailers, up to the blank line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def authorized(self):
        if self.token is None:
            return True
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == USER and hmac.compare_digest(password, self.token)

    def reply(self, status, headers, body, send=None):
        """Send the whole response in one write: separate writes for the head and the body
        would each wait for the client's delayed ACK (Nagle), 40 ms a response on Linux, which
        no production server costs. `send` is how much of the body to actually send."""
        self.log_request(status)
        head = ["HTTP/1.1 %d %s" % (status, self.responses.get(status, ("",))[0])]
        head += ["%s: %s" % (name, value) for name, value in headers]
        head.append("Content-Length: %d" % len(body))
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body[:send]
        self.wfile.write(data)

    def serve_git(self):
        # The body is read even when refusing, so the connection stays usable for the retry.
        body = self.read_body()
        if not self.authorized():
            self.reply(401, [("WWW-Authenticate", 'Basic realm="git"')], b"authentication required\n")
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": urllib.parse.unquote(path),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": USER if self.token else "",
            "REMOTE_ADDR": self.client_address[0],
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": self.root,
        }
        # Protocol v2 (git CLI) and gzip-compressed requests are handled by http-backend itself.
        for header, variable in (("Git-Protocol", "HTTP_GIT_PROTOCOL"),
                                 ("Content-Encoding", "HTTP_CONTENT_ENCODING")):
            if self.headers.get(header):
                env[variable] = self.headers[header]
        result = subprocess.run(["git", "http-backend"], input=body, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        output = result.stdout
        separator = output.find(b"\r\n\r\n")
        skip = 4
        if separator < 0:
            separator, skip = output.find(b"\n\n"), 2
        if separator < 0:
            self.reply(500, [("Content-Type", "text/plain")], result.stderr or b"git http-backend failed\n")
            return
        status = 200
        headers = []
        for line in output[:separator].decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name.strip():
                headers.append((name.strip(), value.strip()))
        payload = output[separator + skip:]
        if (self.command == "POST" and path.endswith("/git-upload-pack")
                and os.path.exists(os.path.join(self.root, ".truncate-upload-pack"))):
            self.reply(status, headers, payload, send=len(payload) // 2)
            self.close_connection = True
            return
        self.reply(status, headers, payload)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--exit-with-stdin", action="store_true")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    Handler.root = os.path.abspath(args.root)
    Handler.token = os.environ.get("GIT_TEST_TOKEN") or None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls[0], args.tls[1])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)

    def stop_when_parent_goes():
        sys.stdin.read()
        os._exit(0)

    if args.exit_with_stdin:
        threading.Thread(target=stop_when_parent_goes, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()

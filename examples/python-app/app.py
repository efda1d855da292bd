"""The classic container web app: "Hello World" (or $NAME) on port 80, standard library only."""
import os
import socket
from http.server import BaseHTTPRequestHandler, HTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = "Hello {}! I am {}.\n".format(os.getenv("NAME", "world"), socket.gethostname()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    HTTPServer(("", int(os.getenv("PORT", "80"))), Hello).serve_forever()

"""tools/demo's HTTP server: python3 -m http.server without its reverse DNS.

    http_server.py BIND_IP PORT DIRECTORY

http.server looks up its own name (socket.getfqdn) at start-up; inside a pod
that is a DNS query kdp has no route for. Logs one line per request to
stderr: "CLIENT_IP - - [date] "GET / HTTP/1.1" 200 -".
"""
import functools
import http.server
import socketserver
import sys


class Server(http.server.ThreadingHTTPServer):
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def main():
    bind_ip, port, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    with Server((bind_ip, port), handler) as httpd:
        httpd.serve_forever()


if __name__ == "__main__":
    main()

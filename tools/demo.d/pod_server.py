"""The servers of the two-node cluster's pods: each answers with who it is and
whom it saw, so a client learns which backend answered and what source
address reached it.

    pod_server.py NAME BIND_IP [HTTP_PORT [UDP_PORT [TCP_PORT]]]   (defaults 8080 9000 9001)

* HTTP on HTTP_PORT: every GET is answered "NAME saw CLIENT_IP:PORT\\n".
* UDP echo on UDP_PORT: each datagram comes back as "NAME saw CLIENT_IP:PORT: DATA".
* TCP echo on TCP_PORT: a connection first gets "NAME saw CLIENT_IP:PORT\\n",
  then every byte it sends is echoed until it closes.

One line per request on stdout: "http|udp|tcp CLIENT_IP:PORT". No name
lookups (a pod has no DNS), no third-party modules.
"""
import http.server
import socket
import socketserver
import sys
import threading


def log(kind, addr):
    print(f"{kind} {addr[0]}:{addr[1]}", flush=True)


def main():
    name, bind_ip = sys.argv[1], sys.argv[2]
    ports = [int(p) for p in sys.argv[3:6]]
    http_port, udp_port, tcp_port = ports + [8080, 9000, 9001][len(ports):]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            body = f"{name} saw {self.client_address[0]}:{self.client_address[1]}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            log("http", self.client_address)

        def log_message(self, *args):
            pass

    class HttpServer(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def server_bind(self):  # http.server would look its own name up
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = self.server_address[:2]

    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            conn, peer = self.request, self.client_address
            log("tcp", peer)
            conn.sendall(f"{name} saw {peer[0]}:{peer[1]}\n".encode())
            while data := conn.recv(65536):
                conn.sendall(data)

    class EchoServer(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    def udp_echo():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((bind_ip, udp_port))
        while True:
            data, peer = sock.recvfrom(65536)
            log("udp", peer)
            sock.sendto(f"{name} saw {peer[0]}:{peer[1]}: ".encode() + data, peer)

    HttpServer.allow_reuse_address = True
    web = HttpServer((bind_ip, http_port), Handler)
    echo = EchoServer((bind_ip, tcp_port), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    threading.Thread(target=udp_echo, daemon=True).start()
    web.serve_forever()


if __name__ == "__main__":
    main()

// A TLS backend for re-encryption tests: an HTTP/1.1 server behind Python's `ssl` module
// (Debian's libssl underneath), started as a child process on a port the kernel picks.
//
// Why not `openssl s_server -WWW`: it serves one connection at a time, answers HTTP/1.0
// and closes, so a proxy holding an idle keep-alive connection to it would stall every
// other client. This server takes connections on threads, keeps them alive, and does each
// handshake on the connection's own thread, so a client that stops halfway stalls nobody.
//
// Every response stamps the server: the body is its name (as the stub servers of
// haproxy's balance-rr.vtc do), and headers say what it saw of the TLS connection, so a
// test can check the SNI a proxy sent and the protocol it negotiated:
//   X-Server-Name: NAME
//   X-TLS-SNI: the server name the client sent, `-` when none
//   X-TLS-Protocol: TLSv1.3 / TLSv1.2
//   X-TLS-Client-Certificate: the client certificate's CN, `-` when none was sent
//   X-Connection-Request: 1 for the first request on its connection, 2 for the next...
//     (a proxy's keep-alive reuse of its server connection shows as 2 and up)
// `GET /bytes/N` answers N bytes (of `x`) instead, for long transfers.

import Glibc

public final class TLSTestServer: @unchecked Sendable {
    public let name: String
    public let port: UInt16
    public let certificate: TLSCertificate
    private let directory: TempDirectory
    private let child: ChildProcess

    /// Starts the server with `certificate` and waits for its startup line,
    /// `tls-test-server listening on 127.0.0.1:PORT`. With `clientAuthority`, a client
    /// certificate signed by it is required (for `crt` on a `server` line). Every response
    /// has `status` (a health check's verdict; 500 says "Internal Server Error").
    public init(name: String, certificate: TLSCertificate, clientAuthority: TLSAuthority? = nil, status: Int = 200) throws {
        self.name = name
        self.certificate = certificate
        directory = try TempDirectory(prefix: "balancerd-tls-server")
        let script = try directory.write(Self.script, to: "tls_test_server.py")
        var arguments = ["python3", script, "--name", name, "--cert", certificate.certificatePath,
                         "--key", certificate.keyPath, "--status", String(status)]
        if let clientAuthority { arguments += ["--client-ca", clientAuthority.certificatePath] }
        // /usr/bin/env finds python3 on PATH and execs it: the pid we hold is the server's.
        let child = try ChildProcess(executable: "/usr/bin/env", arguments: arguments)
        self.child = child
        port = try child.announcedPort(after: "tls-test-server listening on 127.0.0.1:", server: "the TLS test server")
    }

    public var address: String { "127.0.0.1:\(port)" }
    public var pid: Int32 { child.pid }

    /// Everything the server printed (one line per failed handshake or request), for
    /// failure messages.
    public var outputText: String { child.output.lines().joined(separator: "\n") }

    /// SIGTERM to this server only (SIGKILL after 2 s).
    public func stop() { child.stop(signal: SIGTERM, timeout: 2) }

    deinit { stop() }

    static let script = #"""
        import argparse, http.server, signal, socket, ssl, sys

        ap = argparse.ArgumentParser()
        ap.add_argument("--name", required=True)
        ap.add_argument("--cert", required=True)
        ap.add_argument("--key", required=True)
        ap.add_argument("--client-ca")
        ap.add_argument("--status", type=int, default=200)
        a = ap.parse_args()

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        ctx.set_alpn_protocols(["http/1.1"])
        if a.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(a.client_ca)

        def remember_sni(sock, server_name, _ctx):
            sock.sni = server_name
        ctx.sni_callback = remember_sni

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                # The handshake runs here, on the connection's thread, bounded in time.
                self.request.settimeout(10)
                self.request.do_handshake()
                self.served = 0
                super().setup()

            def do_GET(self):
                if self.path.startswith("/bytes/"):
                    self.send_stamped(int(self.path[len("/bytes/"):]), None)
                else:
                    self.send_stamped(None, a.name.encode())

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_stamped(None, a.name.encode())

            def send_stamped(self, count, body):
                s = self.request
                peer = s.getpeercert()
                client_cn = "-"
                for rdn in (peer or {}).get("subject", ()):
                    for key, value in rdn:
                        if key == "commonName":
                            client_cn = value
                self.served += 1
                self.send_response(a.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("X-Connection-Request", str(self.served))
                self.send_header("Content-Length", str(count if body is None else len(body)))
                self.send_header("X-Server-Name", a.name)
                self.send_header("X-TLS-SNI", getattr(s, "sni", None) or "-")
                self.send_header("X-TLS-Protocol", s.version() or "-")
                self.send_header("X-TLS-Client-Certificate", client_cn)
                self.end_headers()
                if body is not None:
                    self.wfile.write(body)
                    return
                chunk = b"x" * 65536
                while count > 0:
                    n = min(count, len(chunk))
                    self.wfile.write(chunk[:n])
                    count -= n

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, addr = self.socket.accept()
                # No handshake in the accept loop: a client that stops halfway would stop it.
                return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

            def handle_error(self, request, client_address):
                print(f"tls-test-server: {client_address[1]}: {sys.exc_info()[1]!r}", flush=True)

        server = Server(("127.0.0.1", 0), Handler)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print(f"tls-test-server listening on 127.0.0.1:{server.server_address[1]}", flush=True)
        server.serve_forever()

        """#
}

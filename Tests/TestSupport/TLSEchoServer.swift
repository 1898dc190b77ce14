// A TLS backend for TCP-mode tests (`server ... ssl` in `mode tcp`): a byte-stream server
// behind Python's `ssl` module (Debian's libssl underneath), started as a child process on
// a port the kernel picks. Connections are served on threads of their own, each doing its
// own handshake, so a peer that stops halfway stalls nobody.
//
// Behaviours:
//   .echo   echoes every byte; at the peer's end of stream (close_notify or FIN) sends its
//           own close_notify once everything was echoed, then closes: half-close aware.
//   .stamp  sends `NAME\n`, then close_notify, then closes (the stub servers of haproxy's
//           balance-rr.vtc, over TLS).
//   .stall  accepts and never answers the handshake (no TLS at all): a server that holds
//           a proxy's handshake until the proxy gives up.
//
// One line per connection when it ends, for tests to wait on:
//   tls-echo-server NAME: done sni=SNI version=TLSv1.3 received=N end=close_notify
//     (`end`, for .echo: how the peer ended its stream, `close_notify` or a bare FIN `eof`)
//   tls-echo-server NAME: handshake failed: REASON
//   tls-echo-server NAME: stalled connection accepted

import Glibc

public final class TLSEchoServer: @unchecked Sendable {
    public enum Behaviour: String, Sendable {
        case echo, stamp, stall
    }

    public let name: String
    public let port: UInt16
    private let directory: TempDirectory
    private let child: ChildProcess

    /// Starts the server (with `certificate`, which `.stall` does not use) and waits for its
    /// startup line, `tls-echo-server listening on 127.0.0.1:PORT`.
    public init(name: String, certificate: TLSCertificate, behaviour: Behaviour = .echo) throws {
        self.name = name
        directory = try TempDirectory(prefix: "balancerd-tls-echo")
        let script = try directory.write(Self.script, to: "tls_echo_server.py")
        let arguments = ["python3", script, "--name", name, "--cert", certificate.certificatePath,
                         "--key", certificate.keyPath, "--behaviour", behaviour.rawValue]
        // /usr/bin/env finds python3 on PATH and execs it: the pid we hold is the server's.
        let child = try ChildProcess(executable: "/usr/bin/env", arguments: arguments)
        self.child = child
        port = try child.announcedPort(after: "tls-echo-server listening on 127.0.0.1:", server: "the TLS echo server")
    }

    public var address: String { "127.0.0.1:\(port)" }
    public var pid: Int32 { child.pid }

    /// Everything the server printed, for failure messages.
    public var outputText: String { child.output.lines().joined(separator: "\n") }

    /// The connections that ended after a complete handshake: what each saw.
    public var finished: [Connection] {
        let prefix = "tls-echo-server \(name): done "
        return child.output.lines().compactMap { line in
            guard line.hasPrefix(prefix) else { return nil }
            var fields: [String: String] = [:]
            for pair in line.dropFirst(prefix.count).split(separator: " ") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
            }
            return Connection(serverName: fields["sni"] ?? "-", protocolVersion: fields["version"] ?? "-",
                              received: Int(fields["received"] ?? "") ?? -1, end: fields["end"] ?? "-")
        }
    }

    /// Lines reporting a handshake that failed (a client that refused the certificate).
    public var failedHandshakes: [String] {
        child.output.lines().filter { $0.hasPrefix("tls-echo-server \(name): handshake failed") }
    }

    /// Connections accepted by a `.stall` server.
    public var stalledConnections: Int {
        child.output.lines().filter { $0 == "tls-echo-server \(name): stalled connection accepted" }.count
    }

    /// What the server saw of one connection.
    public struct Connection: Sendable, Equatable {
        /// The SNI the client sent, `-` when none.
        public var serverName: String
        public var protocolVersion: String
        /// Bytes received (and, for `.echo`, sent back).
        public var received: Int
        /// How the peer ended its stream (`.echo`): `close_notify`, or `eof` for a bare FIN.
        public var end: String

        public init(serverName: String, protocolVersion: String, received: Int, end: String) {
            self.serverName = serverName
            self.protocolVersion = protocolVersion
            self.received = received
            self.end = end
        }
    }

    /// SIGTERM to this server only (SIGKILL after 2 s).
    public func stop() { child.stop(signal: SIGTERM, timeout: 2) }

    deinit {
        stop()
        directory.remove()
    }

    static let script = #"""
        import argparse, signal, socket, ssl, sys, threading

        ap = argparse.ArgumentParser()
        ap.add_argument("--name", required=True)
        ap.add_argument("--cert", required=True)
        ap.add_argument("--key", required=True)
        ap.add_argument("--behaviour", required=True, choices=["echo", "stamp", "stall"])
        a = ap.parse_args()

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        def remember_sni(sock, server_name, _ctx):
            sock.sni = server_name
        ctx.sni_callback = remember_sni

        def say(text):
            print(f"tls-echo-server {a.name}: {text}", flush=True)

        held = []

        def serve(raw):
            raw.settimeout(60)
            try:
                # A FIN without close_notify raises, so the end of stream can be told apart.
                s = ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
            except (OSError, ssl.SSLError) as e:
                say(f"handshake failed: {e!r}")
                raw.close()
                return
            received, version, sni, end = 0, s.version() or "-", getattr(s, "sni", None) or "-", "-"
            try:
                if a.behaviour == "stamp":
                    s.sendall(f"{a.name}\n".encode())
                else:
                    while True:
                        try:
                            data = s.recv(1 << 16)
                        except ssl.SSLEOFError:
                            end = "eof"
                            break
                        if not data:
                            end = "close_notify"
                            break
                        received += len(data)
                        s.sendall(data)
                try:
                    s.unwrap()   # close_notify, after everything was sent
                except (OSError, ssl.SSLError, ValueError):
                    pass
            except (OSError, ssl.SSLError) as e:
                say(f"error: {e!r}")
            finally:
                say(f"done sni={sni} version={version} received={received} end={end}")
                s.close()

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print(f"tls-echo-server listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
        while True:
            conn, _ = listener.accept()
            if a.behaviour == "stall":
                held.append(conn)
                say("stalled connection accepted")
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

        """#
}

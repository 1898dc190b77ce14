// Debian's nginx as a real-world backend. One process (`master_process off`, `daemon off`),
// so the pid we spawn is the one serving and the only one we ever signal. Everything it
// writes (pid, error log, temp dirs) stays inside a temp prefix directory.

import Glibc

public final class NginxServer: @unchecked Sendable {
    public let name: String
    public let port: UInt16
    /// The prefix directory: nginx.conf, error.log, html/.
    public let directory: TempDirectory
    private let child: ChildProcess

    /// The nginx binary: /usr/sbin/nginx, else `nginx` on PATH. Throws (so the test fails,
    /// never skips) if it is not installed.
    public static func executablePath() throws -> String {
        var candidates = ["/usr/sbin/nginx"]
        if let path = getenv("PATH").map({ String(cString: $0) }) {
            candidates += path.split(separator: ":").map { "\($0)/nginx" }
        }
        guard let found = candidates.first(where: { access($0, X_OK) == 0 }) else {
            throw TestSupportError("nginx not installed; run .ci/run which installs it")
        }
        return found
    }

    /// Starts nginx on 127.0.0.1:<free port>. `GET /` answers 200 with body `name + "\n"`.
    /// With `bigFileBytes > 0`, `GET /big.bin` serves a static file of that many random bytes
    /// (see `bigFileContents`). Waits until the port accepts connections.
    public init(name: String, bigFileBytes: Int = 0) throws {
        let nginx = try Self.executablePath()
        self.name = name
        directory = try TempDirectory(prefix: "balancerd-nginx")
        let html = directory.file("html")
        mkdir(html, 0o755)
        if bigFileBytes > 0 {
            try directory.write(bytes: randomBytes(count: bigFileBytes), to: "html/big.bin")
        }

        // A free port can be taken between freePort() and nginx's bind: retry a few times.
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = try freePort()
            let conf = try directory.write(Self.config(name: name, port: port, prefix: directory.path), to: "nginx.conf")
            let child = try ChildProcess(
                executable: nginx,
                arguments: ["-p", directory.path + "/", "-c", conf, "-e", directory.file("error.log")]
            )
            if child.listens(on: port, timeout: 10) {
                self.port = port
                self.child = child
                return
            }
            let code = child.stop(signal: SIGKILL, timeout: 1)
            let log = readTextFile(directory.file("error.log"))
            lastError = TestSupportError("""
                nginx did not start on 127.0.0.1:\(port) (exit \(code)). error.log:
                \(log)
                output: \(child.output.lines().joined(separator: "\n"))
                """)
            guard log.contains("Address already in use") else { break }
        }
        throw lastError ?? TestSupportError("nginx did not start")
    }

    public var address: String { "127.0.0.1:\(port)" }
    public var pid: Int32 { child.pid }
    /// The bytes served at /big.bin (empty if not configured).
    public var bigFileContents: [UInt8] {
        let text = directory.file("html/big.bin")
        guard let f = fopen(text, "rb") else { return [] }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = fread(&chunk, 1, chunk.count, f)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return bytes
    }

    /// The error log so far, for failure messages.
    public var errorLog: String { readTextFile(directory.file("error.log")) }

    /// SIGTERM (fast shutdown) to this nginx only; SIGKILL if it lingers.
    public func stop() {
        child.stop(signal: SIGTERM, timeout: 5)
    }

    public func kill() {
        child.stop(signal: SIGKILL, timeout: 5)
    }

    deinit { stop() }

    static func config(name: String, port: UInt16, prefix: String) -> String {
        // Debian compiles in /var/lib/nginx/* temp paths and /var/log/nginx logs: override
        // them all so nothing outside the prefix is needed or touched.
        let escaped = name.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"")
        return """
            daemon off;
            master_process off;
            worker_processes 1;
            pid \(prefix)/nginx.pid;
            error_log \(prefix)/error.log notice;
            events { worker_connections 512; }
            http {
                access_log off;
                default_type application/octet-stream;
                client_body_temp_path \(prefix)/client_body;
                proxy_temp_path \(prefix)/proxy;
                fastcgi_temp_path \(prefix)/fastcgi;
                uwsgi_temp_path \(prefix)/uwsgi;
                scgi_temp_path \(prefix)/scgi;
                keepalive_requests 100000;
                server {
                    listen 127.0.0.1:\(port);
                    root \(prefix)/html;
                    location = / { default_type text/plain; return 200 "\(escaped)\\n"; }
                    location / { }
                }
            }

            """
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = self[...]
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}

// Certificates for TLS tests, made by Debian's `openssl` binary in a temp directory: no
// crypto library in the test target, and the files are exactly what an operator would make
// for haproxy (`crt` takes one PEM holding the certificate and then its key). Also reads
// back what a PEM, or a server during a real handshake, says its names are, so a test can
// check which certificate was served without parsing X.509 itself.

import Glibc

/// The key a certificate is made with. RSA 2048 is what most test suites and haproxy's
/// examples use; ECDSA P-256 is what most public sites serve, and is about 20× cheaper for
/// the server to sign a handshake with.
public enum TLSKeyType: Sendable {
    case rsa2048
    case ecdsaP256

    var newKeyArguments: [String] {
        switch self {
        case .rsa2048: return ["-newkey", "rsa:2048"]
        case .ecdsaP256: return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        }
    }
}

/// A certificate and its private key, as files.
public struct TLSCertificate: Sendable {
    /// The subject's common name (also the first DNS name).
    public let name: String
    /// Every subjectAltName, in order, as given (DNS names and IP addresses).
    public let alternativeNames: [String]
    public let certificatePath: String
    public let keyPath: String
    /// Certificate then key in one file: haproxy's `crt` (and balancerd's `--tls-cert`).
    public let pemPath: String
    /// What a client trusts to accept this certificate (`curl --cacert`, `ca-file`): the
    /// certificate itself when self-signed, else its authority's certificate.
    public let trustPath: String
}

/// A certificate authority that signs leaf certificates (for `verify required` and
/// `ca-file` tests).
public struct TLSAuthority: Sendable {
    public let name: String
    public let certificatePath: String
    public let keyPath: String
}

/// The names a certificate carries, read by `openssl x509`.
public struct TLSCertificateNames: Sendable, Equatable, CustomStringConvertible {
    /// The subject in RFC 2253 form, e.g. `CN=a.test`.
    public let subject: String
    public let commonName: String?
    public let dnsNames: [String]
    public let ipAddresses: [String]

    public var description: String {
        "subject=\(subject) dns=\(dnsNames.joined(separator: ",")) ip=\(ipAddresses.joined(separator: ","))"
    }
}

/// What `openssl s_client` saw in one handshake.
public struct TLSHandshake: Sendable, CustomStringConvertible {
    /// `TLSv1.3`, `TLSv1.2`.
    public let protocolVersion: String
    public let cipher: String
    /// The protocol chosen by ALPN, nil when none was.
    public let alpn: String?
    /// The server's certificate as PEM text, and its names.
    public let certificatePEM: String
    public let names: TLSCertificateNames

    public var description: String {
        "\(protocolVersion) \(cipher) alpn=\(alpn ?? "-") \(names)"
    }
}

/// Makes certificates in a directory of its own, removed with it.
public final class TLSCertificates: @unchecked Sendable {
    public let directory: TempDirectory
    private let made = Protected(0)

    public init() throws {
        directory = try TempDirectory(prefix: "balancerd-tls")
    }

    /// /usr/bin/openssl, else `openssl` on PATH. Throws (so the test fails, never skips)
    /// when it is not installed.
    public static func opensslPath() throws -> String {
        var candidates = ["/usr/bin/openssl"]
        if let path = getenv("PATH").map({ String(cString: $0) }) {
            candidates += path.split(separator: ":").map { "\($0)/openssl" }
        }
        guard let found = candidates.first(where: { access($0, X_OK) == 0 }) else {
            throw TestSupportError("openssl not installed (apt-get install openssl)")
        }
        return found
    }

    /// A self-signed certificate for `name` (its CN and first DNS name) and
    /// `alternativeNames` (DNS names, or IPv4 addresses such as 127.0.0.1), valid 2 days.
    public func selfSigned(_ name: String, alternativeNames: [String] = [], key: TLSKeyType = .rsa2048) throws -> TLSCertificate {
        let base = fileBase(name)
        let (crt, keyFile) = (directory.file(base + ".crt"), directory.file(base + ".key"))
        let sans = [name] + alternativeNames
        try Self.openssl(["req", "-x509"] + key.newKeyArguments + [
            "-nodes", "-subj", "/CN=\(name)", "-addext", "subjectAltName=\(Self.subjectAltName(sans))",
            "-days", "2", "-keyout", keyFile, "-out", crt,
        ])
        return try finish(name: name, alternativeNames: sans, crt: crt, key: keyFile, base: base, trust: crt)
    }

    /// A CA certificate (basicConstraints CA:TRUE, keyCertSign) for `issue(_:by:)`.
    public func authority(_ name: String = "balancerd test CA", key: TLSKeyType = .ecdsaP256) throws -> TLSAuthority {
        let base = fileBase(name)
        let (crt, keyFile) = (directory.file(base + ".crt"), directory.file(base + ".key"))
        try Self.openssl(["req", "-x509"] + key.newKeyArguments + [
            "-nodes", "-subj", "/CN=\(name)",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-days", "2", "-keyout", keyFile, "-out", crt,
        ])
        return TLSAuthority(name: name, certificatePath: crt, keyPath: keyFile)
    }

    /// A leaf certificate for `name` and `alternativeNames`, signed by `authority`, valid 2
    /// days; its `trustPath` is the authority's certificate.
    public func issue(_ name: String, alternativeNames: [String] = [], by authority: TLSAuthority,
                      key: TLSKeyType = .rsa2048) throws -> TLSCertificate {
        let base = fileBase(name)
        let (crt, keyFile, csr) = (directory.file(base + ".crt"), directory.file(base + ".key"), directory.file(base + ".csr"))
        let sans = [name] + alternativeNames
        try Self.openssl(["req", "-new"] + key.newKeyArguments + ["-nodes", "-subj", "/CN=\(name)", "-keyout", keyFile, "-out", csr])
        // x509 -req copies no extension from the request: the leaf's go in an extfile.
        let ext = try directory.write("subjectAltName=\(Self.subjectAltName(sans))\nbasicConstraints=CA:FALSE\n"
                                      + "extendedKeyUsage=serverAuth,clientAuth\n", to: base + ".ext")
        let serial = made.withLock { $0 } + 1000
        try Self.openssl(["x509", "-req", "-in", csr, "-CA", authority.certificatePath, "-CAkey", authority.keyPath,
                          "-set_serial", String(serial), "-days", "2", "-extfile", ext, "-out", crt])
        return try finish(name: name, alternativeNames: sans, crt: crt, key: keyFile, base: base,
                          trust: authority.certificatePath)
    }

    /// The subject and subjectAltNames of the first certificate in `path` (a .crt or a
    /// haproxy PEM), by `openssl x509 -noout -subject -ext subjectAltName`.
    public static func names(ofPEM path: String) throws -> TLSCertificateNames {
        let result = try openssl(["x509", "-in", path, "-noout", "-nameopt", "RFC2253", "-subject", "-ext", "subjectAltName"])
        return parseNames(result.stdout)
    }

    /// One handshake with `openssl s_client` to host:port, sending `serverName` as SNI (none
    /// when nil), offering `alpn`; `extraArguments` such as `-tls1_2` or `-tls1_3`. Throws,
    /// with what s_client printed, when the handshake fails.
    public static func handshake(port: UInt16, host: String = "127.0.0.1", serverName: String?, alpn: [String] = [],
                                 extraArguments: [String] = [], timeout: Double = 10) throws -> TLSHandshake {
        var arguments = ["s_client", "-connect", "\(host):\(port)"]
        arguments += serverName.map { ["-servername", $0] } ?? ["-noservername"]
        if !alpn.isEmpty { arguments += ["-alpn", alpn.joined(separator: ",")] }
        // stdin is /dev/null: s_client handshakes, reads EOF and exits.
        let result = try runProcess(try opensslPath(), arguments + extraArguments, timeout: timeout)
        let lines = result.stdout
        func value(after prefix: String) -> String? {
            lines.lazy.map { $0.trimmingLeadingBlanks }.first { $0.hasPrefix(prefix) }
                .map { String($0.dropFirst(prefix.count)).trimmingLeadingBlanks }
        }
        // `New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384`: printed for every version (the
        // `SSL-Session:` block is not, for TLS 1.3, whose session comes after the handshake).
        let negotiated = value(after: "New, ").map { $0.split(separator: ",").map { String($0).trimmingLeadingBlanks } }
        guard let begin = lines.firstIndex(of: "-----BEGIN CERTIFICATE-----"),
              let end = lines[begin...].firstIndex(of: "-----END CERTIFICATE-----"),
              let negotiated, negotiated.count == 2, negotiated[1].hasPrefix("Cipher is "),
              result.exitCode == 0 else {
            throw TestSupportError("openssl \(arguments.joined(separator: " ")): no handshake (exit \(result.exitCode)):\n\(result.allText)")
        }
        let pem = lines[begin...end].joined(separator: "\n") + "\n"
        let scratch = try TempDirectory(prefix: "balancerd-tls-peer")
        let names = try Self.names(ofPEM: try scratch.write(pem, to: "peer.crt"))
        let alpnValue = value(after: "ALPN protocol:")
        return TLSHandshake(protocolVersion: negotiated[0], cipher: String(negotiated[1].dropFirst("Cipher is ".count)),
                            alpn: alpnValue, certificatePEM: pem, names: names)
    }

    // ----------------------------------------------------------------------------------

    private func finish(name: String, alternativeNames: [String], crt: String, key: String, base: String,
                        trust: String) throws -> TLSCertificate {
        let pem = try directory.write(readTextFile(crt) + readTextFile(key), to: base + ".pem")
        return TLSCertificate(name: name, alternativeNames: alternativeNames, certificatePath: crt, keyPath: key,
                              pemPath: pem, trustPath: trust)
    }

    /// A file name for `name` that is unique in this directory (names may hold `*`).
    private func fileBase(_ name: String) -> String {
        let n = made.withLock { count -> Int in
            count += 1
            return count
        }
        let safe = String(name.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" })
        return "\(n)-\(safe)"
    }

    static func subjectAltName(_ names: [String]) -> String {
        names.map { isIPv4($0) ? "IP:\($0)" : "DNS:\($0)" }.joined(separator: ",")
    }

    private static func isIPv4(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { UInt8($0) != nil }
    }

    /// Parses `subject=CN=a.test` and the `X509v3 Subject Alternative Name:` block
    /// (`DNS:a.test, DNS:www.a.test, IP Address:127.0.0.1`).
    static func parseNames(_ lines: [String]) -> TLSCertificateNames {
        var subject = ""
        var dns: [String] = []
        var ips: [String] = []
        for (i, line) in lines.enumerated() {
            if line.hasPrefix("subject=") {
                subject = String(line.dropFirst("subject=".count)).trimmingLeadingBlanks
            } else if line.hasPrefix("X509v3 Subject Alternative Name"), i + 1 < lines.count {
                for entry in lines[i + 1].split(separator: ",") {
                    let item = String(entry).trimmingLeadingBlanks
                    if item.hasPrefix("DNS:") { dns.append(String(item.dropFirst(4))) }
                    if item.hasPrefix("IP Address:") { ips.append(String(item.dropFirst("IP Address:".count))) }
                }
            }
        }
        // RFC 2253 lists the most specific RDN first: `CN=x,O=y`.
        let cn = subject.split(separator: ",").first { $0.hasPrefix("CN=") }.map { String($0.dropFirst(3)) }
        return TLSCertificateNames(subject: subject, commonName: cn, dnsNames: dns, ipAddresses: ips)
    }

    /// Runs openssl to completion; throws with its output when it fails.
    @discardableResult
    static func openssl(_ arguments: [String]) throws -> ProcessResult {
        let result = try runProcess(try opensslPath(), arguments, timeout: 30)
        guard result.exitCode == 0 else {
            throw TestSupportError("openssl \(arguments.joined(separator: " ")) failed (exit \(result.exitCode)):\n\(result.allText)")
        }
        return result
    }
}

extension String {
    var trimmingLeadingBlanks: String { String(drop { $0 == " " || $0 == "\t" }) }
}

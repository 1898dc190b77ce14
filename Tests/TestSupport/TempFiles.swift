// Temporary directories and config files that clean up after themselves.

import Foundation
import Glibc

/// A fresh directory under $TMPDIR (or /tmp), removed with everything in it by `remove()`
/// or when the object goes away.
public final class TempDirectory: @unchecked Sendable {
    public let path: String
    private let removed = Protected(false)

    public init(prefix: String = "balancerd-test") throws {
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(base)/\(prefix).XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw TestSupportError("mkdtemp in \(base): \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
    }

    /// The path of `name` inside this directory.
    public func file(_ name: String) -> String { "\(path)/\(name)" }

    /// Writes `contents` to `name` atomically (temp file + rename, so a reader such as a
    /// reloading daemon never sees half a file) and returns the path.
    @discardableResult
    public func write(_ contents: String, to name: String) throws -> String {
        try writeFile(file(name), contents)
        return file(name)
    }

    /// Writes raw bytes to `name` and returns the path.
    @discardableResult
    public func write(bytes: [UInt8], to name: String) throws -> String {
        try writeFile(file(name), bytes)
        return file(name)
    }

    public func remove() {
        let first = removed.withLock { r -> Bool in
            defer { r = true }
            return !r
        }
        if first { try? FileManager.default.removeItem(atPath: path) }
    }

    deinit { remove() }
}

/// Writes `contents` to `path` atomically (temp file in the same directory, then rename).
public func writeFile(_ path: String, _ contents: String) throws {
    try writeFile(path, Array(contents.utf8))
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, then rename).
public func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    let temp = path + ".tmp-\(getpid())"
    let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw TestSupportError("open \(temp): \(String(cString: strerror(errno)))") }
    var written = 0
    while written < bytes.count {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, bytes.count - written) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw TestSupportError("write \(temp): \(message)")
        }
        written += n
    }
    close(fd)
    guard rename(temp, path) == 0 else { throw TestSupportError("rename \(temp) → \(path): \(String(cString: strerror(errno)))") }
}

/// Reads a whole file as text (empty string if it cannot be read).
public func readTextFile(_ path: String) -> String {
    (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
}

/// A config file in a directory of its own, removed with it.
public final class TempConfigFile: @unchecked Sendable {
    public let directory: TempDirectory
    public let path: String

    public init(_ contents: String, name: String = "balancerd.cfg") throws {
        directory = try TempDirectory(prefix: "balancerd-cfg")
        path = try directory.write(contents, to: name)
    }

    /// Replaces the contents atomically (for SIGHUP reload tests).
    public func rewrite(_ contents: String) throws {
        try writeFile(path, contents)
    }
}

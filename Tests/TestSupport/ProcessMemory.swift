// What a running process costs in memory, read from outside it: resident set size from
// /proc, and heap allocations counted by Tests/MallocCounter preloaded into it. Also where
// the release balancerd lives, since allocation counts only mean something for the binary
// users run.

import Foundation
import Glibc

/// The package root, found from this file's path (Tests/TestSupport/ProcessMemory.swift).
public func packageRoot() -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
}

/// `.build/release/balancerd` of this package (or `$BALANCERD_RELEASE_BIN`). Throws, so the
/// test fails rather than skips, when it has not been built.
public func releaseBalancerdPath() throws -> String {
    if let path = ProcessInfo.processInfo.environment["BALANCERD_RELEASE_BIN"], !path.isEmpty {
        guard access(path, X_OK) == 0 else {
            throw TestSupportError("BALANCERD_RELEASE_BIN=\(path) is not an executable file")
        }
        return path
    }
    let path = packageRoot() + "/.build/release/balancerd"
    guard access(path, X_OK) == 0 else {
        throw TestSupportError("""
            the release balancerd is missing at \(path): build it first with \
            `swift build -c release --product balancerd` (.ci/run does), or set BALANCERD_RELEASE_BIN
            """)
    }
    // A binary older than the sources would measure code that is no longer there.
    if let built = modificationTime(path), let (newest, source) = newestSource(under: packageRoot() + "/Sources"), newest > built {
        throw TestSupportError("""
            the release balancerd at \(path) is older than \(source): rebuild it with \
            `swift build -c release --product balancerd` (.ci/run does)
            """)
    }
    return path
}

private func modificationTime(_ path: String) -> Date? {
    (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
}

/// The most recently modified file under `directory`, and its time.
private func newestSource(under directory: String) -> (Date, String)? {
    guard let files = FileManager.default.enumerator(atPath: directory) else { return nil }
    var newest: (Date, String)?
    while let relative = files.nextObject() as? String {
        let path = directory + "/" + relative
        if let time = modificationTime(path), time > (newest?.0 ?? .distantPast) { newest = (time, path) }
    }
    return newest
}

/// `VmRSS` of process `pid`, in bytes.
public func residentSetBytes(pid: Int32) throws -> Int {
    let text = readTextFile("/proc/\(pid)/status")
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else {
        throw TestSupportError("no VmRSS in /proc/\(pid)/status (has the process exited?)")
    }
    // "VmRSS:	   19240 kB"
    let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
    guard fields.count >= 3, let kib = Int(fields[1]), fields[2] == "kB" else {
        throw TestSupportError("cannot parse /proc/\(pid)/status line: \(line)")
    }
    return kib * 1024
}

/// Raises this process's soft open-file limit to `count` (capped at the hard limit) and
/// returns the soft limit now in effect. Children spawned afterwards inherit it.
@discardableResult
public func raiseOpenFileLimit(to count: Int) -> Int {
    var limit = rlimit()
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    guard getrlimit(resource, &limit) == 0 else { return 0 }
    let wanted = min(rlim_t(count), limit.rlim_max)
    if limit.rlim_cur < wanted {
        limit.rlim_cur = wanted
        _ = setrlimit(resource, &limit)
        _ = getrlimit(resource, &limit)
    }
    return Int(limit.rlim_cur)
}

/// Tests/MallocCounter/malloc_counter.c built into a shared library in a temp directory,
/// with the file its counts go to. Start a process with `environment` and read its counts
/// at any moment with `allocations()`.
public final class MallocCounter: @unchecked Sendable {
    public let directory: TempDirectory
    public let libraryPath: String
    /// The shared file: little-endian UInt64 words, [0] allocations, [1] frees.
    public let countsPath: String

    /// Compiles the library with `cc -shared -fPIC -O2`. Throws with the compiler's output.
    public init() throws {
        directory = try TempDirectory(prefix: "balancerd-malloc")
        let source = packageRoot() + "/Tests/MallocCounter/malloc_counter.c"
        guard access(source, R_OK) == 0 else { throw TestSupportError("malloc counter source missing: \(source)") }
        libraryPath = directory.file("libmalloccounter.so")
        countsPath = directory.file("counts")
        let compiler = ProcessInfo.processInfo.environment["CC"].flatMap { $0.isEmpty ? nil : $0 } ?? "/usr/bin/cc"
        let result = try runProcess(compiler, ["-shared", "-fPIC", "-O2", "-o", libraryPath, source], timeout: 60)
        guard result.exitCode == 0, access(libraryPath, R_OK) == 0 else {
            throw TestSupportError("\(compiler) -shared -fPIC -O2 \(source) failed (exit \(result.exitCode)):\n\(result.allText)")
        }
    }

    /// The environment that preloads the counter into a child.
    public var environment: [String: String] {
        ["LD_PRELOAD": libraryPath, "MALLOC_COUNTER_FILE": countsPath]
    }

    /// Allocations so far (malloc, calloc, realloc, the aligned variants). Throws if the
    /// counts file does not exist yet (the library was not loaded into any process).
    public func allocations() throws -> UInt64 { try word(0) }

    /// Frees of non-null pointers so far.
    public func frees() throws -> UInt64 { try word(1) }

    private func word(_ index: Int) throws -> UInt64 {
        let fd = open(countsPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw TestSupportError("cannot open \(countsPath): \(String(cString: strerror(errno))) (was the counter preloaded?)")
        }
        defer { close(fd) }
        var value: UInt64 = 0
        let n = withUnsafeMutableBytes(of: &value) { pread(fd, $0.baseAddress!, 8, off_t(index * 8)) }
        guard n == 8 else { throw TestSupportError("short read of \(countsPath) (\(n) bytes)") }
        return UInt64(littleEndian: value)
    }
}

// Log lines assembled as bytes in a per-loop buffer and handed to the proxy's `LogSink`
// once per loop iteration, so logging costs no lock, no String and one call (for the
// default sink, one write(2)) per batch. Batches are cut below PIPE_BUF (4096) so lines
// from different loops never interleave mid-line when stderr is a pipe.
import CBalancerShims
import Glibc

/// Where a proxy's access log goes (one line per TCP connection or HTTP request, in
/// haproxy's format). Set it in `ProxyOptions`; the default is stderr, as balancerd does.
///
/// The closure receives a batch of whole lines, each ending in "\n": the lines one event
/// loop produced in one iteration, cut at about 3 KiB. It is called on that loop's thread,
/// so several loops call it at the same time, and the loop waits for it: it must be
/// thread-safe and must not block for long. The bytes are valid only during the call.
public struct LogSink: Sendable {
    public var write: @Sendable (UnsafeRawBufferPointer) -> Void

    public init(_ write: @escaping @Sendable (UnsafeRawBufferPointer) -> Void) {
        self.write = write
    }

    /// Each batch goes to `fd` in one write(2) (more if the write is short). A descriptor
    /// that fails (gone, or full and non-blocking) loses the batch rather than block the
    /// loop forever.
    public static func fileDescriptor(_ fd: CInt) -> LogSink {
        LogSink { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    break
                }
                offset += n
            }
        }
    }

    public static let standardError = LogSink.fileDescriptor(2)
    public static let standardOutput = LogSink.fileDescriptor(1)
    /// Drops the lines. (`ProxyOptions.quiet` is cheaper: it does not format them.)
    public static let discard = LogSink { _ in }
}

public final class LogBuffer {
    private var bytes: [UInt8] = []
    /// Set by `Proxy` before its loops start; read only by this buffer's loop thread.
    public var sink: LogSink
    private var cachedSecond: Int64 = -1
    private var cachedDate: [UInt8] = []

    public init(sink: LogSink = .standardError) {
        self.sink = sink
        bytes.reserveCapacity(8192)
        cachedDate.reserveCapacity(32)
    }

    /// Writes what is buffered. Called at the end of each loop iteration.
    public func flush() {
        guard !bytes.isEmpty else { return }
        bytes.withUnsafeBytes { sink.write($0) }
        bytes.removeAll(keepingCapacity: true)
    }

    /// Ends a line; flushes early if the next line could push the batch past PIPE_BUF.
    public func endLine() {
        bytes.append(UInt8(ascii: "\n"))
        if bytes.count > 3000 { flush() }
    }

    @inline(__always) public func append(_ byte: UInt8) { bytes.append(byte) }
    @inline(__always) public func append(_ other: [UInt8]) { bytes.append(contentsOf: other) }
    @inline(__always) public func append(_ other: UnsafeRawBufferPointer) { bytes.append(contentsOf: other) }
    public func append(_ string: StaticString) {
        string.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }
    public func append(_ string: String) {
        bytes.append(contentsOf: string.utf8)
    }

    public func append(_ value: Int) {
        if value < 0 {
            bytes.append(UInt8(ascii: "-"))
            append(UInt64(-value))
        } else {
            append(UInt64(value))
        }
    }

    public func append(_ value: UInt64) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var v = value
        withUnsafeMutableBytes(of: &digits) { raw in
            repeat {
                raw[count] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
                count += 1
            } while v > 0
            for i in stride(from: count - 1, through: 0, by: -1) { bytes.append(raw[i]) }
        }
    }

    private static func appendPadded(_ value: Int, width: Int, to bytes: inout [UInt8]) {
        var divisor = 1
        for _ in 1..<width { divisor *= 10 }
        var v = value
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8((v / divisor) % 10))
            v %= divisor
            divisor /= 10
        }
    }

    /// The numeric client address and port, `1.2.3.4:5678` (haproxy's `%ci:%cp`).
    public func append(_ address: SocketAddress) {
        address.withNumericHost { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: ":"))
        append(Int(address.port))
    }

    private static let months: [StaticString] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `[25/Nov/2026:10:01:02.123]` in local time, haproxy's `%t` date format.
    public func appendDate(wallMilliseconds ms: Int64) {
        let second = ms / 1000
        if second != cachedSecond {
            // Written into the cache's own storage (kept from second to second), so that
            // a new second costs no allocation either.
            cachedSecond = second
            var t = time_t(second)
            var parts = tm()
            localtime_r(&t, &parts)
            cachedDate.removeAll(keepingCapacity: true)
            LogBuffer.appendPadded(Int(parts.tm_mday), width: 2, to: &cachedDate)
            cachedDate.append(UInt8(ascii: "/"))
            LogBuffer.months[Int(parts.tm_mon)].withUTF8Buffer { cachedDate.append(contentsOf: $0) }
            cachedDate.append(UInt8(ascii: "/"))
            LogBuffer.appendPadded(Int(parts.tm_year) + 1900, width: 4, to: &cachedDate)
            cachedDate.append(UInt8(ascii: ":"))
            LogBuffer.appendPadded(Int(parts.tm_hour), width: 2, to: &cachedDate)
            cachedDate.append(UInt8(ascii: ":"))
            LogBuffer.appendPadded(Int(parts.tm_min), width: 2, to: &cachedDate)
            cachedDate.append(UInt8(ascii: ":"))
            LogBuffer.appendPadded(Int(parts.tm_sec), width: 2, to: &cachedDate)
        }
        bytes.append(UInt8(ascii: "["))
        bytes.append(contentsOf: cachedDate)
        bytes.append(UInt8(ascii: "."))
        LogBuffer.appendPadded(Int(ms % 1000), width: 3, to: &bytes)
        bytes.append(UInt8(ascii: "]"))
    }
}

/// Lines from the control thread (start-up, reloads, health flips): rare, so plain
/// Strings and one write each.
public enum ControlLog {
    public static func line(_ message: String) {
        var text = message
        text.append("\n")
        text.withUTF8 { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(2, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { if n < 0 && errno == EINTR { continue }; break }
                offset += n
            }
        }
    }
}

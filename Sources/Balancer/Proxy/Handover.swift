// Handing the listening sockets from a running balancerd to its replacement (haproxy's
// `-x` and `_getsocks`), so that a binary upgrade or a restart never has a moment when
// no socket listens: the kernel's accept queues belong to the sockets, and the sockets
// never close, they only change hands.
//
// The conversation, on the old process's Runtime API socket (`stats socket PATH level
// admin expose-fd listeners`):
//   new → old  "_getsocks\n"
//   old → new  a header: the magic, the old pid, the number of sockets;
//              then batches: 4 bytes (how many in this batch) with the sockets attached
//              (SCM_RIGHTS), at most `UnixSocket.maximumDescriptorsPerMessage` each.
//              A refusal is a text line instead of the header, then the close.
//   ...        the new process builds its proxy on the sockets and starts its loops...
//   new → old  "_softstop\n"
//   old → new  "stopping\n"; the old process stops accepting, finishes its connections
//              within --grace, and exits 0.
// If the new process dies before it is listening, the connection closes without
// `_softstop` and the old process carries on: there is never a moment with nobody
// accepting.
//
// Fixed-size reads keep each batch's descriptors with its bytes (see UnixSocket.receive).
// Control thread (new side) and the runtime socket's thread (old side) only.

public enum Handover {
    /// The first bytes of a header; a refusal never starts with them.
    static let magic = Array("balancerd-fds 1\n".utf8)
    static let headerSize = magic.count + 8
    static let batchHeaderSize = 4

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// What a new process got from the old one: the sockets, and the connection over
    /// which it tells the old one to stop (`finish`).
    public struct Received: Sendable {
        public var descriptors: [CInt]
        public var oldPID: Int32
        public let path: String
        let connection: CInt
    }

    // MARK: old side

    /// Sends `sockets` over `connection` (a Runtime API client that asked `_getsocks`).
    static func send(_ sockets: [CInt], pid: Int32, over connection: CInt) throws(SystemError) {
        var header = magic
        header += bytes(UInt32(bitPattern: pid))
        header += bytes(UInt32(sockets.count))
        try UnixSocket.send(connection, bytes: header)
        var start = 0
        while start < sockets.count {
            let batch = Array(sockets[start..<min(sockets.count, start + UnixSocket.maximumDescriptorsPerMessage)])
            try UnixSocket.send(connection, bytes: bytes(UInt32(batch.count)), descriptors: batch)
            start += batch.count
        }
    }

    // MARK: new side

    /// Connects to the old process's socket at `path` and takes its listening sockets.
    /// Every failure names `path` and says what to do about it.
    public static func receive(from path: String, timeout: Duration = .seconds(10)) throws(Failure) -> Received {
        let connection: CInt
        do {
            connection = try UnixSocket.connect(path: path, timeout: timeout)
        } catch {
            throw Failure(description: "cannot take the listeners from \(path): \(error) (is a balancerd running with 'stats socket \(path) level admin expose-fd listeners'?)")
        }
        var received: [CInt] = []
        do throws(Failure) {
            try write("_getsocks\n", to: connection, path: path)
            let header = try read(exactly: headerSize, from: connection, path: path, into: &received)
            guard header.count == headerSize, Array(header.prefix(magic.count)) == magic else {
                // A refusal: the old process explained itself in a line of text.
                var text = header
                while let more = try? UnixSocket.receive(connection, count: 512), !more.bytes.isEmpty {
                    text += more.bytes
                    more.descriptors.forEach(Posix.close)
                    if text.count > 4096 { break }
                }
                let reason = String(decoding: text, as: UTF8.self).trimmingWhitespace()
                throw Failure(description: "\(path) refused to hand over its listeners: \(reason.isEmpty ? "it closed the connection" : reason)")
            }
            let pid = Int32(bitPattern: word(header, at: magic.count))
            let total = Int(word(header, at: magic.count + 4))
            while received.count < total {
                let batch = try read(exactly: batchHeaderSize, from: connection, path: path, into: &received)
                guard batch.count == batchHeaderSize else {
                    throw Failure(description: "\(path): the connection closed after \(received.count) of \(total) listening sockets")
                }
            }
            guard received.count == total else {
                throw Failure(description: "\(path): expected \(total) listening sockets, got \(received.count)")
            }
            return Received(descriptors: received, oldPID: pid, path: path, connection: connection)
        } catch {
            received.forEach(Posix.close)
            Posix.close(connection)
            throw error
        }
    }

    /// Tells the old process to stop accepting and finish (once this process listens),
    /// and closes the connection.
    public static func finish(_ received: Received) throws(Failure) {
        defer { Posix.close(received.connection) }
        var none: [CInt] = []
        try write("_softstop\n", to: received.connection, path: received.path)
        let answer = try read(exactly: "stopping\n".utf8.count, from: received.connection, path: received.path, into: &none)
        none.forEach(Posix.close)
        guard answer == Array("stopping\n".utf8) else {
            throw Failure(description: "\(received.path): pid \(received.oldPID) did not confirm the stop (answered '\(String(decoding: answer, as: UTF8.self).trimmingWhitespace())')")
        }
    }

    /// Reads exactly `count` bytes (fewer only at EOF); descriptors that come with them
    /// are appended to `descriptors`.
    private static func read(exactly count: Int, from connection: CInt, path: String,
                             into descriptors: inout [CInt]) throws(Failure) -> [UInt8] {
        var bytes: [UInt8] = []
        while bytes.count < count {
            let part: (bytes: [UInt8], descriptors: [CInt])
            do {
                part = try UnixSocket.receive(connection, count: count - bytes.count)
            } catch {
                throw Failure(description: "\(path): \(error)")
            }
            descriptors += part.descriptors
            if part.bytes.isEmpty { break }
            bytes += part.bytes
        }
        return bytes
    }

    private static func write(_ text: String, to connection: CInt, path: String) throws(Failure) {
        do {
            try UnixSocket.send(connection, bytes: Array(text.utf8))
        } catch {
            throw Failure(description: "\(path): \(error)")
        }
    }

    private static func bytes(_ value: UInt32) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    private static func word(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        var value: UInt32 = 0
        for i in 0..<4 { value |= UInt32(bytes[offset + i]) << (8 * i) }
        return value
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}

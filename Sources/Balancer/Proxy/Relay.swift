// One direction of a TCP session: bytes from `source` to `destination`.
//
// Zero copy through a pipe with splice(2) when a pipe is available, otherwise through a
// reused 16 KiB buffer. Either way at most one pipe's or one buffer's worth of data is
// in flight per direction, and reading stops while the destination cannot take more:
// that is the backpressure, and it bounds memory per connection (see README).
//
// Readiness is tracked by hand because sockets are registered edge-triggered: a flag is
// set by an epoll event and cleared only by EAGAIN. The source is read only when the
// pipe is empty, so an EAGAIN from splice into the pipe can only mean "the socket is
// empty" (a pipe counts slots, not bytes, so "not full" is not knowable otherwise).

struct Relay {
    enum Outcome {
        /// Waiting for readiness; the flags say which.
        case idle
        /// Moved `budget` bytes and could move more: run again later, to be fair.
        case budgetExhausted
        /// The source hit EOF and everything was delivered: time to pass the FIN on.
        case finished
        case sourceFailed(Errno)
        case destinationFailed(Errno)
    }

    var source: CInt = -1
    var destination: CInt = -1
    var pipe: PipePair?
    var buffer: UnsafeMutableRawBufferPointer?
    var bufferOffset = 0
    /// Bytes read from the source and not yet written to the destination.
    var pending = 0
    var sourceReadable = true
    var destinationWritable = true
    var sourceEOF = false
    var finished = false
    var bytesRead = 0
    var bytesWritten = 0

    mutating func pump(budget: Int) -> Outcome {
        var moved = 0
        while true {
            if pending > 0 {
                guard destinationWritable else { return .idle }
                do {
                    switch try writePending() {
                    case .processed(let n):
                        pending -= n
                        bytesWritten += n
                        moved += n
                    case .wouldBlock:
                        destinationWritable = false
                        return .idle
                    }
                } catch {
                    return .destinationFailed(error.errno)
                }
                continue
            }
            if sourceEOF {
                // The FIN for the destination is the state machine's decision
                // (`.shutdownWrite`), carried out by the session.
                finished = true
                return .finished
            }
            if moved >= budget { return sourceReadable ? .budgetExhausted : .idle }
            guard sourceReadable else { return .idle }
            do {
                switch try readIntoPending() {
                case .processed(0):
                    sourceEOF = true
                case .processed(let n):
                    pending = n
                    bytesRead += n
                case .wouldBlock:
                    sourceReadable = false
                    return .idle
                }
            } catch {
                return .sourceFailed(error.errno)
            }
        }
    }

    private mutating func readIntoPending() throws(SystemError) -> IOResult<Int> {
        if let pipe {
            return try Posix.splice(from: source, to: pipe.write, count: pipe.capacity)
        }
        bufferOffset = 0
        return try Posix.read(source, buffer!)
    }

    private mutating func writePending() throws(SystemError) -> IOResult<Int> {
        if let pipe {
            return try Posix.splice(from: pipe.read, to: destination, count: pending)
        }
        let buffer = buffer!
        let chunk = UnsafeRawBufferPointer(rebasing: buffer[bufferOffset..<(bufferOffset + pending)])
        let result = try Posix.write(destination, chunk)
        if case .processed(let n) = result { bufferOffset += n }
        return result
    }
}

/// A pipe used as a splice buffer. Reused across sessions of a loop (PipePool) because
/// creating one costs two syscalls and two descriptors.
struct PipePair {
    var read: CInt
    var write: CInt
    var capacity: Int
}

/// Per-loop pools of pipes and buffers. Loop thread only.
final class TransferPool {
    private var pipes: [PipePair] = []
    private var buffers: [UnsafeMutableRawBufferPointer] = []
    static let bufferSize = 16 * 1024
    /// Pipes kept for reuse; beyond that they are closed, to give descriptors back.
    private let maxIdlePipes = 256

    func takePipe() -> PipePair? {
        if let pipe = pipes.popLast() { return pipe }
        guard let fds = try? Posix.pipe() else { return nil }   // EMFILE: the caller falls back to a buffer
        return PipePair(read: fds.read, write: fds.write, capacity: Posix.pipeCapacity(fds.write))
    }

    /// Returns a pipe. One that still holds bytes (the session was aborted) is closed,
    /// since its contents belong to a dead connection.
    func give(_ pipe: PipePair, empty: Bool) {
        if empty && pipes.count < maxIdlePipes {
            pipes.append(pipe)
        } else {
            Posix.close(pipe.read)
            Posix.close(pipe.write)
        }
    }

    func takeBuffer() -> UnsafeMutableRawBufferPointer {
        if let buffer = buffers.popLast() { return buffer }
        return .allocate(byteCount: TransferPool.bufferSize, alignment: 16)
    }

    private var byteBuffers: [ByteBuffer] = []

    /// A buffer for HTTP mode (reused across sessions; 16 KiB to start).
    func takeByteBuffer() -> ByteBuffer {
        if var buffer = byteBuffers.popLast() {
            buffer.clear()
            return buffer
        }
        return ByteBuffer(capacity: TransferPool.bufferSize)
    }

    func give(_ buffer: ByteBuffer) {
        // A buffer that grew for one large head is not kept: it would pin that memory.
        if byteBuffers.count < 1024 && buffer.capacity <= 4 * TransferPool.bufferSize {
            byteBuffers.append(buffer)
        } else {
            buffer.deallocate()
        }
    }

    func give(_ buffer: UnsafeMutableRawBufferPointer) {
        if buffers.count < 1024 { buffers.append(buffer) } else { buffer.deallocate() }
    }

    deinit {
        for pipe in pipes { Posix.close(pipe.read); Posix.close(pipe.write) }
        for buffer in buffers { buffer.deallocate() }
        for buffer in byteBuffers { buffer.deallocate() }
    }
}

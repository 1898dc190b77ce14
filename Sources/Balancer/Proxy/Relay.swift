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
    /// Bytes the source may deliver before this relay's part of the stream ends: a
    /// Content-Length body in HTTP mode. The rest belongs to the next message.
    var limit = Int.max
    /// The source hit a real EOF before `limit` bytes.
    var endedEarly = false

    init() {}

    /// A relay through `pipe` that ends after `limit` bytes of the source (a body).
    init(from source: CInt, to destination: CInt, pipe: PipePair, limit: Int,
         sourceReadable: Bool, destinationWritable: Bool) {
        self.source = source
        self.destination = destination
        self.pipe = pipe
        self.limit = limit
        self.sourceReadable = sourceReadable
        self.destinationWritable = destinationWritable
    }

    /// Hands the relay's pipe or buffer back to `pool`. A pipe that still holds bytes
    /// (the transfer was cut short) is closed by the pool, since they belong to a dead
    /// connection.
    mutating func returnResources(to pool: TransferPool) {
        if let pipe { pool.give(pipe, empty: pending == 0) }
        if let buffer { pool.give(buffer) }
        pipe = nil
        buffer = nil
    }

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
            if bytesRead >= limit {
                sourceEOF = true
                continue
            }
            if moved >= budget { return sourceReadable ? .budgetExhausted : .idle }
            guard sourceReadable else { return .idle }
            do {
                switch try readIntoPending() {
                case .processed(0):
                    sourceEOF = true
                    if limit != .max { endedEarly = true }
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
        let allowed = limit - bytesRead
        if let pipe {
            return try Posix.splice(from: source, to: pipe.write, count: min(pipe.capacity, allowed))
        }
        bufferOffset = 0
        let buffer = buffer!
        return try Posix.read(source, allowed < buffer.count ? UnsafeMutableRawBufferPointer(rebasing: buffer[..<allowed]) : buffer)
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

    /// Memory of returned HTTP buffers (see ByteBuffer.releaseStorage).
    private var byteBuffers: [(storage: UnsafeMutableRawPointer, capacity: Int)] = []
    /// Buffers kept for reuse. Enough for the exchanges a loop has in flight at once under
    /// ordinary load; past it a burst's buffers go back to malloc at once. Below it, the
    /// buffers no exchange needed for a whole second are freed too (`sweep`), down to
    /// `byteBufferReserve`, so that the memory of a burst does not stay with the idle
    /// connections after it.
    static let byteBufferHighWater = 128
    static let byteBufferReserve = 8
    /// The fewest buffers the pool held since the last sweep: that many were not needed.
    private var byteBufferLowWater = 0
    private var lastSweep: Int64 = 0
    private var freedSinceTrim = 0

    /// Borrows a buffer for HTTP mode (16 KiB to start) into `buffer`, which must be
    /// `.unallocated`.
    @inline(__always)
    func borrow(_ buffer: inout ByteBuffer) {
        guard !buffer.isAllocated else { return }
        if let pooled = byteBuffers.popLast() {
            if byteBuffers.count < byteBufferLowWater { byteBufferLowWater = byteBuffers.count }
            buffer = ByteBuffer(adopting: pooled.storage, capacity: pooled.capacity)
        } else {
            buffer = ByteBuffer(capacity: TransferPool.bufferSize)
        }
    }

    /// Small buffers, for what waits only a little: the copy of a small request kept for
    /// a replay while its response is awaited. With many requests in flight, a 16 KiB
    /// buffer each for a 200-byte GET would be most of a loop's memory.
    private var smallBuffers: [UnsafeMutableRawPointer] = []
    static let smallBufferSize = 2048
    static let smallBufferHighWater = 1024
    static let smallBufferReserve = 64
    private var smallBufferLowWater = 0

    /// Borrows a small buffer (`smallBufferSize`) into `buffer`, which must be
    /// `.unallocated`. The caller makes sure what it writes fits: a small buffer that
    /// had to grow would allocate.
    @inline(__always)
    func borrowSmall(_ buffer: inout ByteBuffer) {
        guard !buffer.isAllocated else { return }
        if let storage = smallBuffers.popLast() {
            if smallBuffers.count < smallBufferLowWater { smallBufferLowWater = smallBuffers.count }
            buffer = ByteBuffer(adopting: storage, capacity: TransferPool.smallBufferSize)
        } else {
            buffer = ByteBuffer(capacity: TransferPool.smallBufferSize)
        }
    }

    /// Gives `buffer` back to the pool and leaves it `.unallocated`.
    @inline(__always)
    func giveBack(_ buffer: inout ByteBuffer) {
        guard buffer.isAllocated else { return }
        var returned = ByteBuffer.unallocated
        swap(&returned, &buffer)
        if returned.capacity == TransferPool.smallBufferSize {
            if smallBuffers.count < TransferPool.smallBufferHighWater, let kept = returned.releaseStorage() {
                smallBuffers.append(kept.storage)
            }
            return
        }
        // A buffer that grew for one large message is not kept: it would pin that memory.
        // Nor is a small one that grew: it would be lent out as a full-size one.
        if byteBuffers.count < TransferPool.byteBufferHighWater && returned.capacity <= 4 * TransferPool.bufferSize
            && returned.capacity >= TransferPool.bufferSize {
            if let storage = returned.releaseStorage() { byteBuffers.append(storage) }
        } else {
            freedSinceTrim += returned.capacity
            // `returned` frees its memory as it goes out of scope.
        }
    }

    /// After a burst freed a lot of buffers, glibc keeps their pages in its arenas; ask
    /// it to return them (malloc_trim also releases free pages inside the heap, not only
    /// at its top). Called from the loop's end of iteration; cheap when nothing was freed.
    func trimIfShrunk() {
        guard freedSinceTrim >= 1 << 20 else { return }
        freedSinceTrim = 0
        Posix.releaseFreeMemory()
    }

    static let sweepInterval: Int64 = 1_000_000_000

    /// Whether a sweep could free something: the worker keeps a timer armed while so.
    var holdsSpareBuffers: Bool {
        byteBuffers.count > TransferPool.byteBufferReserve || smallBuffers.count > TransferPool.smallBufferReserve
    }

    /// Once a second (see ProxyWorker's PoolSweeper): frees the pooled
    /// buffers that stayed unused for the whole second, beyond a small reserve.
    func sweep(now: Int64) {
        guard now - lastSweep >= TransferPool.sweepInterval else { return }
        lastSweep = now
        var unused = min(byteBufferLowWater, byteBuffers.count) - TransferPool.byteBufferReserve
        while unused > 0, let pooled = byteBuffers.popLast() {
            pooled.storage.deallocate()
            freedSinceTrim += pooled.capacity
            unused -= 1
        }
        byteBufferLowWater = byteBuffers.count
        unused = min(smallBufferLowWater, smallBuffers.count) - TransferPool.smallBufferReserve
        while unused > 0, let storage = smallBuffers.popLast() {
            storage.deallocate()
            freedSinceTrim += TransferPool.smallBufferSize
            unused -= 1
        }
        smallBufferLowWater = smallBuffers.count
        // At most once a second, so any amount freed is worth handing back.
        if freedSinceTrim > 0 {
            freedSinceTrim = 0
            Posix.releaseFreeMemory()
        }
    }

    func give(_ buffer: UnsafeMutableRawBufferPointer) {
        if buffers.count < 1024 { buffers.append(buffer) } else { buffer.deallocate() }
    }

    deinit {
        for pipe in pipes { Posix.close(pipe.read); Posix.close(pipe.write) }
        for buffer in buffers { buffer.deallocate() }
        for buffer in byteBuffers { buffer.storage.deallocate() }
        for storage in smallBuffers { storage.deallocate() }
    }
}

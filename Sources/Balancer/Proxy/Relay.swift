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
    /// TLS on the source (decrypted bytes are read from it) or on the destination (bytes
    /// are encrypted into it): an `ssl` bind in TCP mode. Such a relay uses a buffer,
    /// never a pipe. TLS can wait for the other direction of its socket (a read that
    /// must send, a write that must receive): the session then marks this relay ready on
    /// any event of that socket.
    var sourceTLS: TLSConnection?
    var destinationTLS: TLSConnection?
    /// The last TLS read waits for its socket to become writable.
    var tlsWaitsWritable = false

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
        let target = allowed < buffer.count ? UnsafeMutableRawBufferPointer(rebasing: buffer[..<allowed]) : buffer
        if let sourceTLS {
            tlsWaitsWritable = false
            switch sourceTLS.read(into: target) {
            case .processed(let n): return .processed(n)
            case .wantRead: return .wouldBlock
            case .wantWrite:
                tlsWaitsWritable = true
                return .wouldBlock
            case .closed: return .processed(0)
            case .failed: throw SystemError("SSL_read", .connectionReset)
            }
        }
        return try Posix.read(source, target)
    }

    private mutating func writePending() throws(SystemError) -> IOResult<Int> {
        if let pipe {
            return try Posix.splice(from: pipe.read, to: destination, count: pending)
        }
        let buffer = buffer!
        let chunk = UnsafeRawBufferPointer(rebasing: buffer[bufferOffset..<(bufferOffset + pending)])
        let result: IOResult<Int>
        if let destinationTLS {
            switch destinationTLS.write(chunk) {
            case .processed(let n): result = .processed(n)
            case .wantRead, .wantWrite: result = .wouldBlock
            case .closed, .failed: throw SystemError("SSL_write", .brokenPipe)
            }
        } else {
            result = try Posix.write(destination, chunk)
        }
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
    private let budget: PipeBudget
    private var pipes: [PipePair] = []
    private var buffers: [UnsafeMutableRawBufferPointer] = []
    static let bufferSize = 16 * 1024
    /// Pipes kept for reuse; beyond that they are closed, to give descriptors back.
    private let maxIdlePipes = 256

    init(budget: PipeBudget) {
        self.budget = budget
    }

    /// A pipe, or nil when the budget is spent or the process is out of descriptors:
    /// the caller then copies through a buffer.
    func takePipe() -> PipePair? {
        if let pipe = pipes.popLast() { return pipe }
        guard budget.reserve() else { return nil }
        guard let fds = try? Posix.pipe() else {
            budget.release()
            return nil
        }
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
            budget.release()
        }
    }

    func takeBuffer() -> UnsafeMutableRawBufferPointer {
        if let buffer = buffers.popLast() { return buffer }
        return .allocate(byteCount: TransferPool.bufferSize, alignment: 16)
    }

    /// HTTP mode's buffers, in two size classes. Large: 16 KiB, for reading and for
    /// whatever waits while a peer is slow. Small: for the copy of a small request kept
    /// for a replay while its response is awaited; with many requests in flight, 16 KiB
    /// each for a 200-byte GET would be most of a loop's memory.
    ///
    /// Each class keeps at most `highWater` buffers: enough for the exchanges a loop has
    /// in flight at once under ordinary load; past it, a burst's buffers go back to malloc
    /// at once. Below it, the buffers no exchange needed for a whole second are freed by
    /// `sweep`, down to `reserve`, so the memory of a burst does not stay after it.
    private var large = FreeList(size: TransferPool.bufferSize, largestKept: 4 * TransferPool.bufferSize,
                                 highWater: 128, reserve: 8)
    private var small = FreeList(size: TransferPool.smallBufferSize, largestKept: TransferPool.smallBufferSize,
                                 highWater: 1024, reserve: 64)
    static let smallBufferSize = 2048
    private var freedSinceSweep = 0

    /// One size class of buffers. A buffer of the class that grew for a larger message
    /// is kept up to `largestKept`; beyond it, it would pin that memory.
    private struct FreeList {
        let size: Int
        let largestKept: Int
        let highWater: Int
        let reserve: Int
        private var storage: [(memory: UnsafeMutableRawPointer, capacity: Int)] = []
        /// The fewest buffers held since the last sweep: that many were not needed.
        private var lowWater = 0

        init(size: Int, largestKept: Int, highWater: Int, reserve: Int) {
            self.size = size
            self.largestKept = largestKept
            self.highWater = highWater
            self.reserve = reserve
        }

        func holds(capacity: Int) -> Bool { capacity >= size && capacity <= largestKept }

        mutating func take() -> ByteBuffer {
            guard let kept = storage.popLast() else { return ByteBuffer(capacity: size) }
            if storage.count < lowWater { lowWater = storage.count }
            return ByteBuffer(adopting: kept.memory, capacity: kept.capacity)
        }

        /// Keeps `buffer`'s memory if there is room; returns whether it did (else the
        /// buffer frees it when it goes out of scope).
        mutating func keep(_ buffer: consuming ByteBuffer) -> Bool {
            guard storage.count < highWater, let kept = buffer.releaseStorage() else { return false }
            storage.append((kept.storage, kept.capacity))
            return true
        }

        var holdsSpare: Bool { storage.count > reserve }

        /// Frees what stayed unused since the last sweep, beyond the reserve. Returns the
        /// bytes freed.
        mutating func sweep() -> Int {
            var unused = min(lowWater, storage.count) - reserve
            var freed = 0
            while unused > 0, let kept = storage.popLast() {
                kept.memory.deallocate()
                freed += kept.capacity
                unused -= 1
            }
            lowWater = storage.count
            return freed
        }

        func deallocateAll() {
            for kept in storage { kept.memory.deallocate() }
        }
    }

    /// Borrows a 16 KiB buffer for HTTP mode into `buffer`, unless it holds one already.
    @inline(__always)
    func borrow(_ buffer: inout ByteBuffer) {
        guard !buffer.isAllocated else { return }
        buffer = large.take()
    }

    /// Borrows a small buffer (`smallBufferSize`) into `buffer`, unless it holds one
    /// already. The caller makes sure what it writes fits: a small buffer that had to
    /// grow would allocate.
    @inline(__always)
    func borrowSmall(_ buffer: inout ByteBuffer) {
        guard !buffer.isAllocated else { return }
        buffer = small.take()
    }

    /// Gives `buffer` back to the pool and leaves it `.unallocated`. A small buffer that
    /// grew is not kept: it would be lent out as a full-size one.
    @inline(__always)
    func giveBack(_ buffer: inout ByteBuffer) {
        guard buffer.isAllocated else { return }
        var returned = ByteBuffer.unallocated
        swap(&returned, &buffer)
        let capacity = returned.capacity
        let kept: Bool
        if capacity == small.size {
            kept = small.keep(returned)
        } else if large.holds(capacity: capacity) {
            kept = large.keep(returned)
        } else {
            kept = false   // `returned` frees its memory as it goes out of scope
        }
        if !kept { freedSinceSweep += capacity }
    }

    static let sweepInterval: Int64 = 1_000_000_000

    /// Memory freed outside the pool that the next sweep should hand back to the kernel
    /// too: a closed TLS connection frees OpenSSL's state (several KiB, in many small
    /// blocks that interleave with everything else on the heap).
    func noteFreed(bytes: Int) {
        freedSinceSweep += bytes
    }

    /// Whether `sweep` could free something: the worker keeps a timer armed while so.
    var needsSweep: Bool { large.holdsSpare || small.holdsSpare || freedSinceSweep > 0 }

    /// Once a second (ProxyWorker's PoolSweeper): frees the pooled buffers that stayed
    /// unused for the whole second, beyond each class's reserve, then asks glibc to hand
    /// the freed pages back to the kernel (malloc_trim also releases free pages inside
    /// the heap, not only at its top), so RSS returns after a burst.
    func sweep() {
        freedSinceSweep += large.sweep() + small.sweep()
        if freedSinceSweep > 0 {
            freedSinceSweep = 0
            Posix.releaseFreeMemory()
        }
    }

    func give(_ buffer: UnsafeMutableRawBufferPointer) {
        if buffers.count < 1024 { buffers.append(buffer) } else { buffer.deallocate() }
    }

    deinit {
        for pipe in pipes { Posix.close(pipe.read); Posix.close(pipe.write); budget.release() }
        for buffer in buffers { buffer.deallocate() }
        large.deallocateAll()
        small.deallocateAll()
    }
}

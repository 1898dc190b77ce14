// A growable byte buffer with a read and a write index, for HTTP mode, where heads must be
// looked at. A session borrows its buffers from the loop's TransferPool only while bytes
// wait in them, and gives them back as soon as they are empty, so an idle connection
// holds none (`unallocated`). A buffer grows (doubling) only when a message needs more,
// and compacts (moves the unread bytes to the front) instead of growing when that makes
// room.
//
// Offsets are 32-bit (a buffer never nears 4 GiB): every idle connection carries its
// buffer headers, and 24 bytes instead of 32 each is part of keeping it small.
//
// The buffer owns its memory (~Copyable, freed in deinit), so a buffer can be neither
// leaked nor shared by two connections by accident; the pool takes the memory back with
// `releaseStorage()` instead of freeing it.
struct ByteBuffer: ~Copyable {
    private var base: UnsafeMutableRawPointer?
    private var size: UInt32 = 0
    private var start: UInt32 = 0
    private var end: UInt32 = 0

    init(capacity: Int) {
        base = .allocate(byteCount: capacity, alignment: 16)
        size = UInt32(capacity)
    }

    private init() {
        base = nil
    }

    /// A buffer over memory that `releaseStorage()` gave up earlier (the pool's).
    init(adopting storage: UnsafeMutableRawPointer, capacity: Int) {
        base = storage
        size = UInt32(capacity)
    }

    deinit { base?.deallocate() }

    /// Gives up the memory without freeing it: the pool keeps it for the next borrower.
    consuming func releaseStorage() -> (storage: UnsafeMutableRawPointer, capacity: Int)? {
        let storage = base.map { (storage: $0, capacity: Int(size)) }
        discard self
        return storage
    }

    /// A buffer that holds no memory: what a session keeps while a side is idle.
    static var unallocated: ByteBuffer { ByteBuffer() }

    var isAllocated: Bool { base != nil }

    var capacity: Int { Int(size) }
    var reader: Int { Int(start) }
    var writer: Int { Int(end) }
    var readableCount: Int { Int(end &- start) }
    var isEmpty: Bool { end == start }

    /// The unread bytes. Valid until the next mutation.
    var readable: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base.map { UnsafeRawPointer($0 + Int(start)) }, count: Int(end &- start))
    }

    /// Room for at least `count` more bytes, then the writable region.
    mutating func writable(atLeast count: Int) -> UnsafeMutableRawBufferPointer {
        precondition(isAllocated, "borrow the buffer from the pool first")
        if Int(size) - Int(end) < count {
            if start > 0 {
                let unread = Int(end - start)
                if unread > 0 { base!.copyMemory(from: base! + Int(start), byteCount: unread) }
                start = 0
                end = UInt32(unread)
            }
            if Int(size) - Int(end) < count {
                var newCapacity = Int(size) * 2
                while newCapacity - Int(end) < count { newCapacity *= 2 }
                let grown = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
                if end > 0 { grown.copyMemory(from: base!, byteCount: Int(end)) }
                base!.deallocate()
                base = grown
                size = UInt32(newCapacity)
            }
        }
        return UnsafeMutableRawBufferPointer(start: base! + Int(end), count: Int(size - end))
    }

    mutating func didWrite(_ count: Int) { end += UInt32(count) }

    mutating func consume(_ count: Int) {
        start += UInt32(count)
        if start == end { start = 0; end = 0 }
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        let target = writable(atLeast: bytes.count)
        target.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        end += UInt32(bytes.count)
    }


    /// Moves the first `count` unread bytes of `source` to the end of this buffer. When
    /// this buffer is empty and they are all that `source` holds, the two swap their
    /// memory instead and no byte is copied, as haproxy's b_xfer() does. A relayed body
    /// mostly takes that path: each read is passed on before the next. Returns whether
    /// the buffers swapped; `source` then holds what this buffer held (nothing, maybe no
    /// memory). Copying, this buffer must be allocated.
    @discardableResult
    mutating func transfer(_ count: Int, from source: inout ByteBuffer) -> Bool {
        guard count > 0 else { return false }
        if isEmpty && count == source.readableCount {
            swap(&self, &source)
            return true
        }
        append(UnsafeRawBufferPointer(rebasing: source.readable.prefix(count)))
        source.consume(count)
        return false
    }

    mutating func clear() { start = 0; end = 0 }
}

// A growable byte buffer with a read and a write index, for HTTP mode, where heads must be
// looked at. A session borrows its buffers from the loop's TransferPool only while bytes
// wait in them, and gives them back as soon as they are empty, so an idle connection
// holds none (`unallocated`). A buffer grows (doubling) only when a message needs more,
// and compacts (moves the unread bytes to the front) instead of growing when that makes
// room.
//
// Offsets are 32-bit (a buffer never nears 4 GiB): every idle connection carries its
// buffer headers, and 24 bytes instead of 32 each is part of keeping it small.
struct ByteBuffer {
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

    /// A buffer that holds no memory: what a session keeps while a side is idle.
    static var unallocated: ByteBuffer { ByteBuffer() }

    var isAllocated: Bool { base != nil }

    /// Frees the storage. The buffer must not be used afterwards.
    func deallocate() { base?.deallocate() }

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

    mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    mutating func clear() { start = 0; end = 0 }
}

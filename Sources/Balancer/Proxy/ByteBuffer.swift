// A growable byte buffer with a read and a write index, for HTTP mode, where heads must be
// looked at. A session borrows its buffers from the loop's TransferPool only while bytes
// wait in them, and gives them back as soon as they are empty, so an idle connection
// holds none (`unallocated`). A buffer grows (doubling) only when a message needs more,
// and compacts (moves the unread bytes to the front) instead of growing when that makes
// room.
struct ByteBuffer {
    private(set) var storage: UnsafeMutableRawBufferPointer
    private(set) var reader = 0
    private(set) var writer = 0

    init(capacity: Int) {
        storage = .allocate(byteCount: capacity, alignment: 16)
    }

    private init() {
        storage = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    }

    /// A buffer that holds no memory: what a session keeps while a side is idle.
    static var unallocated: ByteBuffer { ByteBuffer() }

    var isAllocated: Bool { storage.baseAddress != nil }

    /// Frees the storage. The buffer must not be used afterwards.
    func deallocate() { storage.deallocate() }

    var capacity: Int { storage.count }
    var readableCount: Int { writer - reader }
    var isEmpty: Bool { writer == reader }

    /// The unread bytes. Valid until the next mutation.
    var readable: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: storage[reader..<writer])
    }

    /// Room for at least `count` more bytes, then the writable region.
    mutating func writable(atLeast count: Int) -> UnsafeMutableRawBufferPointer {
        precondition(isAllocated, "borrow the buffer from the pool first")
        if storage.count - writer < count {
            if reader > 0 {
                let unread = writer - reader
                if unread > 0 {
                    storage.baseAddress!.copyMemory(from: storage.baseAddress! + reader, byteCount: unread)
                }
                reader = 0
                writer = unread
            }
            if storage.count - writer < count {
                var newCapacity = storage.count * 2
                while newCapacity - writer < count { newCapacity *= 2 }
                let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: newCapacity, alignment: 16)
                if writer > 0 { grown.baseAddress!.copyMemory(from: storage.baseAddress!, byteCount: writer) }
                storage.deallocate()
                storage = grown
            }
        }
        return UnsafeMutableRawBufferPointer(rebasing: storage[writer...])
    }

    mutating func didWrite(_ count: Int) { writer += count }

    mutating func consume(_ count: Int) {
        reader += count
        if reader == writer { reader = 0; writer = 0 }
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        let target = writable(atLeast: bytes.count)
        target.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        writer += bytes.count
    }

    mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    mutating func clear() { reader = 0; writer = 0 }
}

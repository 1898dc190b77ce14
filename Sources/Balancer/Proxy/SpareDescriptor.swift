// One descriptor each loop keeps in reserve, so that a client accepted with the last free
// descriptor can still open its server socket. Without it, a process at its open-file
// limit accepts a client (the kernel's queue empties by one), finds no descriptor for the
// server, closes the client, and accepts the next one the freed number lets in: every
// queued client is dropped in turn instead of waiting for room.
//
// The rule: the listener accepts only while the spare is held (Listener.acceptBatch); a
// server connect that meets EMFILE/ENFILE gives the spare up and tries once more
// (Socket.connect(to:spare:)), and the listener pauses until the spare can be taken back.
// An HTTP session connects after its request arrives, so a burst of accepted HTTP clients
// shares one spare; a TCP session connects at once and always has it.
//
// Threading: owned by one ProxyWorker, used on its loop's thread only.
struct SpareDescriptor: ~Copyable {
    private var fd: CInt = -1

    init() {}

    /// Holds the spare again if it was given up. Throws (EMFILE) while no descriptor is free.
    mutating func restore() throws(SystemError) {
        guard fd < 0 else { return }
        fd = try Posix.placeholderDescriptor()
    }

    /// Gives the spare up for a connection that needs it. False if it was not held.
    mutating func release() -> Bool {
        guard fd >= 0 else { return false }
        Posix.close(fd)
        fd = -1
        return true
    }

    deinit {
        if fd >= 0 { Posix.close(fd) }
    }
}

extension Socket {
    /// `connect(to:)`; when it finds no free descriptor, once more after giving up `spare`.
    static func connect(to address: SocketAddress, spare: inout SpareDescriptor) throws(SystemError) -> (fd: CInt, connected: Bool) {
        do {
            return try connect(to: address)
        } catch where error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem {
            guard spare.release() else { throw error }
            return try connect(to: address)
        }
    }
}

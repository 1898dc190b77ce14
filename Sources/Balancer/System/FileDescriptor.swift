// A descriptor that owns itself, as swift-system's FileDescriptor would if it were
// ~Copyable: it is closed exactly once, in deinit, so a path that forgets to close it (an
// early return, an error) cannot leak it, and a copy that could close it twice cannot
// exist. `release()` hands the number to another owner without closing it.

public struct FileDescriptor: ~Copyable {
    public let rawValue: CInt

    /// Takes ownership of `rawValue`.
    public init(adopting rawValue: CInt) {
        self.rawValue = rawValue
    }

    deinit { Posix.close(rawValue) }

    /// Makes the coming close send a reset instead of a FIN (SO_LINGER 0): for a
    /// connection ended because something failed.
    public func resetOnClose() { Posix.abortOnClose(rawValue) }

    /// Gives up ownership without closing.
    public consuming func release() -> CInt {
        let raw = rawValue
        discard self
        return raw
    }
}

// Socket recipes built from Posix calls: a listener and an outgoing connection.
import CBalancerShims
import Glibc

public enum Socket {
    /// A non-blocking listening socket. `reusePort` lets every loop thread own a listener
    /// on the same address, so the kernel spreads connections without a shared accept lock.
    public static func listen(on address: SocketAddress, reusePort: Bool, backlog: CInt = 4096) throws(SystemError) -> CInt {
        let fd = try Posix.socket(family: address.family)
        do throws(SystemError) {
            try Posix.setOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
            if reusePort { try Posix.setOption(fd, level: SOL_SOCKET, name: SO_REUSEPORT, value: 1) }
            if case .v6 = address { try Posix.setOption(fd, level: Int32(IPPROTO_IPV6), name: IPV6_V6ONLY, value: 1) }
            // Accepted sockets inherit TCP_NODELAY from their listener (Linux clones the
            // listener's socket), which saves a setsockopt per connection. Nagle would
            // hold back the tail of every response we relay until the client's delayed
            // ACK (40 ms): the client already chose its segment sizes.
            try Posix.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1)
            try Posix.bind(fd, to: address)
            try Posix.listen(fd, backlog: backlog)
            return fd
        } catch {
            Posix.close(fd)
            throw error
        }
    }

    /// Disables Nagle's algorithm: forwarded bytes leave at once, since the peer that
    /// sent them already batched them.
    public static func setNoDelay(_ fd: CInt) {
        _ = try? Posix.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1)
    }

    /// Starts connecting to `address`; returns the socket and whether it is already connected.
    public static func connect(to address: SocketAddress) throws(SystemError) -> (fd: CInt, connected: Bool) {
        let fd = try Posix.socket(family: address.family)
        // Forwarded bytes should leave at once: the client already batched them.
        setNoDelay(fd)
        do throws(SystemError) {
            switch try Posix.connect(fd, to: address) {
            case .processed(let connected): return (fd, connected)
            case .wouldBlock:
                Posix.close(fd)
                throw SystemError("connect", .wouldBlock)
            }
        } catch {
            Posix.close(fd)
            throw error
        }
    }
}

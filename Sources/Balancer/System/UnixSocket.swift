// Unix stream sockets: the Runtime API's listener (haproxy's `stats socket PATH`).
// Kept apart from Socket.swift's TCP recipes because the address is a path, the file must
// be removed and given permissions, and peers have no address worth reporting.
import CBalancerShims
import Glibc

public enum UnixSocket {
    /// The longest path a sockaddr_un holds (108 bytes on Linux, NUL included).
    public static let maximumPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    /// A non-blocking listener bound to `path`. A file already at `path` is removed first
    /// when it is a socket (a previous run's, left by a crash), as haproxy does; anything
    /// else there is an error (EADDRINUSE). `mode`: the file's permission bits, else the umask's.
    public static func listen(path: String, mode: UInt32?, backlog: CInt = 16) throws(SystemError) -> CInt {
        guard !path.isEmpty, path.utf8.count <= maximumPathLength else { throw SystemError("bind", Errno(rawValue: ENAMETOOLONG)) }
        var status = stat()
        if lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK {
            removeFile(path)
        }
        let fd = try syscallValue(where: "socket") { Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | cbs_sock_flags(), 0) }
        do throws(SystemError) {
            _ = try withAddress(of: path) { (sa, length) throws(SystemError) -> CInt in
                try syscallValue(where: "bind") { cbs_bind(fd, sa, length) }
            }
            if let mode {
                _ = try syscallValue(where: "chmod") { Glibc.chmod(path, mode_t(mode)) }
            }
            try Posix.listen(fd, backlog: backlog)
            return fd
        } catch {
            Posix.close(fd)
            throw error
        }
    }

    /// Calls `body` with `path` as a sockaddr_un and its length (bind, connect, sendto);
    /// the caller checked the path's length against `maximumPathLength`. A path that
    /// starts with "@" names an abstract socket (systemd's NOTIFY_SOCKET may be one): its
    /// first byte is NUL and the length counts only the name, as unix(7) says.
    private static func withAddress<T>(of path: String,
                                       _ body: (UnsafePointer<sockaddr>, socklen_t) throws(SystemError) -> T) throws(SystemError) -> T {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let abstract = path.hasPrefix("@")
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[abstract ? 0 : path.utf8.count] = 0
        }
        let length = abstract ? MemoryLayout<sa_family_t>.size + path.utf8.count : MemoryLayout<sockaddr_un>.size
        return try withUnsafePointer(to: &address) { (pointer) throws(SystemError) -> T in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> T in
                try body(sa, socklen_t(length))
            }
        }
    }

    /// The pid of the process at the other end of a connected unix socket (SO_PEERCRED).
    public static func peerProcessID(_ fd: CInt) -> Int32? {
        let pid = cbs_peer_pid(fd)
        return pid > 0 ? pid : nil
    }

    /// Sends `bytes` as one datagram to the datagram socket at `path` (or "@name"), from
    /// a socket made for the purpose and closed after: systemd's notification protocol.
    public static func sendDatagram(_ bytes: [UInt8], to path: String) throws(SystemError) {
        guard !path.isEmpty, path.utf8.count <= maximumPathLength else { throw SystemError("sendto", Errno(rawValue: ENAMETOOLONG)) }
        let fd = try syscallValue(where: "socket") { Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue), 0) }
        defer { Posix.close(fd) }
        let sent = try withAddress(of: path) { (sa, length) throws(SystemError) -> Int in
            try syscallValue(where: "sendto") {
                bytes.withUnsafeBytes { raw in Glibc.sendto(fd, raw.baseAddress, raw.count, CInt(MSG_NOSIGNAL), sa, length) }
            }
        }
        if sent != bytes.count { throw SystemError("sendto", Errno(rawValue: EMSGSIZE)) }
    }

    /// Accepts one connection as a non-blocking socket.
    public static func accept(_ fd: CInt) throws(SystemError) -> IOResult<CInt> {
        try syscall(where: "accept4") { cbs_accept4(fd, nil, nil, cbs_sock_flags()) }
    }

    /// Removes the socket file; a file already gone is fine.
    public static func removeFile(_ path: String) {
        _ = unlink(path)
    }

    /// Which file `path` names now (device and inode), nil when there is none. A process
    /// that bound `path` compares this before removing the file, because a newer process
    /// may have bound the same path since (a handover) and the file is then no longer its.
    public struct FileIdentity: Equatable, Sendable {
        var device: UInt64
        var inode: UInt64
    }

    public static func fileIdentity(_ path: String) -> FileIdentity? {
        var status = stat()
        guard lstat(path, &status) == 0 else { return nil }
        return FileIdentity(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
    }

    /// A blocking connection to the socket at `path`, whose reads and writes give up after
    /// `timeout` (EAGAIN, reported as a `SystemError` naming the call). For a short
    /// conversation on the control thread (the handover), never for a loop.
    public static func connect(path: String, timeout: Duration) throws(SystemError) -> CInt {
        guard !path.isEmpty, path.utf8.count <= maximumPathLength else { throw SystemError("connect", Errno(rawValue: ENAMETOOLONG)) }
        let fd = try syscallValue(where: "socket") { Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0) }
        do throws(SystemError) {
            var limit = timeval(tv_sec: Int(timeout.nanoseconds / 1_000_000_000), tv_usec: Int(timeout.nanoseconds % 1_000_000_000 / 1000))
            _ = try syscallValue(where: "setsockopt(SO_RCVTIMEO)") {
                Glibc.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            }
            _ = try syscallValue(where: "setsockopt(SO_SNDTIMEO)") {
                Glibc.setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            }
            _ = try withAddress(of: path) { (sa, length) throws(SystemError) -> CInt in
                try syscallValue(where: "connect") { cbs_connect(fd, sa, length) }
            }
            return fd
        } catch {
            Posix.close(fd)
            throw error
        }
    }

    /// The most descriptors one `send` carries.
    public static let maximumDescriptorsPerMessage = Int(CBS_MAX_FDS)

    /// Sends all of `bytes` in one message with `descriptors` attached (SCM_RIGHTS; the
    /// receiver gets its own references, ours stay open). A short send, or one that would
    /// block, is an error: these messages are a few bytes on an otherwise idle socket.
    public static func send(_ fd: CInt, bytes: [UInt8], descriptors: [CInt] = []) throws(SystemError) {
        precondition(descriptors.count <= maximumDescriptorsPerMessage)
        let sent = try syscallValue(where: "sendmsg") {
            bytes.withUnsafeBytes { raw in
                descriptors.withUnsafeBufferPointer { fds in
                    cbs_send_fds(fd, raw.baseAddress, raw.count, fds.baseAddress, CInt(fds.count))
                }
            }
        }
        if sent != bytes.count { throw SystemError("sendmsg", Errno(rawValue: EMSGSIZE)) }
    }

    /// Receives up to `count` bytes and the descriptors that came with them. Reading a
    /// fixed size per message keeps each message's descriptors with its bytes: the kernel
    /// hands over a message's descriptors with the first of its bytes that is read.
    /// Zero bytes: the peer closed.
    public static func receive(_ fd: CInt, count: Int) throws(SystemError) -> (bytes: [UInt8], descriptors: [CInt]) {
        var bytes = [UInt8](repeating: 0, count: count)
        var fds = [CInt](repeating: -1, count: maximumDescriptorsPerMessage)
        var received: CInt = 0
        let n = try syscallValue(where: "recvmsg") {
            bytes.withUnsafeMutableBytes { raw in
                fds.withUnsafeMutableBufferPointer { out in
                    cbs_recv_fds(fd, raw.baseAddress, raw.count, out.baseAddress, CInt(out.count), &received)
                }
            }
        }
        return (Array(bytes[..<n]), Array(fds[..<Int(received)]))
    }
}

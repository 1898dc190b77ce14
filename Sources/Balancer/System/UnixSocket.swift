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
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: path.utf8)
                raw[path.utf8.count] = 0
            }
            _ = try withUnsafePointer(to: &address) { (pointer) throws(SystemError) -> CInt in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> CInt in
                    try syscallValue(where: "bind") { cbs_bind(fd, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
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

    /// Accepts one connection as a non-blocking socket.
    public static func accept(_ fd: CInt) throws(SystemError) -> IOResult<CInt> {
        try syscall(where: "accept4") { cbs_accept4(fd, nil, nil, cbs_sock_flags()) }
    }

    /// Removes the socket file; a file already gone is fine.
    public static func removeFile(_ path: String) {
        _ = unlink(path)
    }
}

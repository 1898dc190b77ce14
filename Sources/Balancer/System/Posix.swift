// The one place that calls libc for I/O (with Epoll.swift). Modelled on swift-nio's
// `enum Posix`: every call goes through `syscall(where:_:)`, which
//  - retries EINTR, because a signal landing on a loop thread is never a reason to fail;
//  - turns EAGAIN into `.wouldBlock`;
//  - stops the process on EBADF/EFAULT, which mean a bug (a closed or reused fd) that
//    would otherwise corrupt an unrelated connection.
import CBalancerShims
import Glibc

@inline(__always)
func syscall<T: FixedWidthInteger>(where call: StaticString, _ body: () -> T) throws(SystemError) -> IOResult<T> {
    while true {
        let result = body()
        if result >= 0 { return .processed(result) }
        let err = Glibc.errno
        switch err {
        case EINTR: continue
        case EAGAIN: return .wouldBlock
        case EBADF, EFAULT:
            preconditionFailure("\(call) failed with \(Errno(rawValue: err)): a descriptor bug")
        default:
            throw SystemError(call, Errno(rawValue: err))
        }
    }
}

/// Same as `syscall`, for calls where EAGAIN cannot happen or is itself an error.
@inline(__always)
func syscallValue<T: FixedWidthInteger>(where call: StaticString, _ body: () -> T) throws(SystemError) -> T {
    switch try syscall(where: call, body) {
    case .processed(let value): return value
    case .wouldBlock: throw SystemError(call, .wouldBlock)
    }
}

public enum Posix {
    // MARK: memory

    /// Returns free heap pages to the kernel (glibc's malloc_trim). For after a burst,
    /// never per request.
    public static func releaseFreeMemory() {
        _ = malloc_trim(0)
    }

    // MARK: descriptors

    /// Closes `fd`. EINTR on close must not be retried on Linux (the fd is gone), so this
    /// does not go through `syscall`.
    public static func close(_ fd: CInt) {
        let result = Glibc.close(fd)
        if result < 0 && Glibc.errno == EBADF {
            preconditionFailure("close(\(fd)) on a descriptor that is not open")
        }
    }

    /// Reads a socket. recv(2), not read(2): read passes through the VFS layer
    /// (fdget_pos, rw_verify_area, the file's read_iter) before it reaches the socket,
    /// which perf showed costing a few percent of the kernel's time per request.
    public static func read(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        try syscall(where: "recv") { Glibc.recv(fd, buffer.baseAddress, buffer.count, 0) }
    }

    /// Looks at the next byte without taking it: how an idle connection is checked.
    public static func peek(_ fd: CInt) -> IOResult<Int> {
        var byte: UInt8 = 0
        while true {
            let n = Glibc.recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
            if n >= 0 { return .processed(n) }
            if Glibc.errno == EINTR { continue }
            if Glibc.errno == EAGAIN { return .wouldBlock }
            return .processed(0)   // an error is as final as an EOF for the caller
        }
    }

    public static func write(_ fd: CInt, _ buffer: UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        // MSG_NOSIGNAL: a peer that went away must give EPIPE, not kill the process.
        try syscall(where: "send") { Glibc.send(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Moves up to `count` bytes between a socket and a pipe without copying them to user space.
    public static func splice(from source: CInt, to destination: CInt, count: Int) throws(SystemError) -> IOResult<Int> {
        try syscall(where: "splice") {
            cbs_splice(source, destination, count)
        }
    }

    /// A non-blocking, close-on-exec pipe: (read end, write end).
    public static func pipe() throws(SystemError) -> (read: CInt, write: CInt) {
        var fds: (CInt, CInt) = (-1, -1)
        _ = try withUnsafeMutableBytes(of: &fds) { (raw) throws(SystemError) -> CInt in
            let ptr = raw.baseAddress!.assumingMemoryBound(to: CInt.self)
            return try syscallValue(where: "pipe2") { cbs_pipe(ptr) }
        }
        return (fds.0, fds.1)
    }

    /// The pipe's capacity in bytes (64 KiB by default on Linux).
    public static func pipeCapacity(_ fd: CInt) -> Int {
        Int(max(cbs_pipe_get_size(fd), 4096))
    }

    // MARK: sockets

    public static func socket(family: CInt) throws(SystemError) -> CInt {
        try syscallValue(where: "socket") {
            Glibc.socket(family, Int32(SOCK_STREAM.rawValue) | cbs_sock_flags(), 0)
        }
    }

    /// A descriptor that stands for nothing (an unbound socket): it holds a slot of the
    /// descriptor table in reserve (SpareDescriptor).
    public static func placeholderDescriptor() throws(SystemError) -> CInt {
        try socket(family: AF_INET)
    }

    public static func setOption(_ fd: CInt, level: CInt, name: CInt, value: CInt) throws(SystemError) {
        var value = value
        _ = try syscallValue(where: "setsockopt") {
            Glibc.setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<CInt>.size))
        }
    }

    /// SO_ERROR: the outcome of a non-blocking connect once the socket is writable.
    public static func pendingError(_ fd: CInt) -> Errno? {
        var value: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        guard Glibc.getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) == 0 else {
            return Errno(rawValue: Glibc.errno)
        }
        return value == 0 ? nil : Errno(rawValue: value)
    }

    public static func bind(_ fd: CInt, to address: SocketAddress) throws(SystemError) {
        _ = try address.withSockAddr { (ptr, len) throws(SystemError) in
            try syscallValue(where: "bind") { cbs_bind(fd, ptr, len) }
        }
    }

    public static func listen(_ fd: CInt, backlog: CInt) throws(SystemError) {
        _ = try syscallValue(where: "listen") { Glibc.listen(fd, backlog) }
    }

    /// Accepts one connection as a non-blocking socket, with its peer address.
    public static func accept(_ fd: CInt) throws(SystemError) -> IOResult<(CInt, SocketAddress)> {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = try withUnsafeMutablePointer(to: &storage) { (ptr) throws(SystemError) -> IOResult<CInt> in
            try ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> IOResult<CInt> in
                try syscall(where: "accept4") { cbs_accept4(fd, sa, &length, cbs_sock_flags()) }
            }
        }
        switch result {
        case .wouldBlock: return .wouldBlock
        case .processed(let client): return .processed((client, SocketAddress(storage: storage)))
        }
    }

    /// Starts a non-blocking connect. `.processed(true)` means connected at once (it
    /// happens on loopback); `.processed(false)` means in progress, wait for writable.
    public static func connect(_ fd: CInt, to address: SocketAddress) throws(SystemError) -> IOResult<Bool> {
        let result = address.withSockAddr { ptr, len in cbs_connect(fd, ptr, len) }
        if result == 0 { return .processed(true) }
        let err = Glibc.errno
        switch err {
        case EINPROGRESS, EINTR: return .processed(false)   // EINTR: the connect goes on asynchronously
        case EAGAIN: return .wouldBlock                      // no local ports left
        case EBADF, EFAULT: preconditionFailure("connect: descriptor bug")
        default: throw SystemError("connect", Errno(rawValue: err))
        }
    }

    public static func localAddress(_ fd: CInt) throws(SystemError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try withUnsafeMutablePointer(to: &storage) { (ptr) throws(SystemError) -> CInt in
            try ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> CInt in
                try syscallValue(where: "getsockname") { cbs_getsockname(fd, sa, &length) }
            }
        }
        return SocketAddress(storage: storage)
    }

    public enum ShutdownHow: CInt { case read = 0, write = 1, both = 2 }

    /// shutdown(2). ENOTCONN (the peer is already gone) is not worth reporting.
    public static func shutdown(_ fd: CInt, _ how: ShutdownHow) {
        _ = Glibc.shutdown(fd, how.rawValue)
    }

    /// Sets SO_LINGER to 0 so close() sends a RST: used when a connection is aborted,
    /// so the peer learns at once instead of seeing a clean FIN.
    public static func abortOnClose(_ fd: CInt) {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        _ = Glibc.setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    }

    public static func duplicate(_ fd: CInt) throws(SystemError) -> CInt {
        try syscallValue(where: "fcntl(F_DUPFD_CLOEXEC)") { Glibc.fcntl(fd, F_DUPFD_CLOEXEC, 0) }
    }


    /// What a public `poll` waits for and reports, in Swift terms so callers outside this
    /// layer (Discovery's HTTP client) need no Glibc.
    public struct PollEvents: OptionSet, Sendable {
        public var rawValue: Int16
        public init(rawValue: Int16) { self.rawValue = rawValue }
        public static let readable = PollEvents(rawValue: Int16(POLLIN))
        public static let writable = PollEvents(rawValue: Int16(POLLOUT))
        public static let error = PollEvents(rawValue: Int16(POLLERR))
        public static let hangup = PollEvents(rawValue: Int16(POLLHUP))
    }

    public struct PollRequest: Sendable {
        public var fd: CInt
        public var events: PollEvents
        /// Filled by `poll`; error and hangup are reported even when not asked for.
        public var returned: PollEvents = []

        public init(fd: CInt, events: PollEvents) {
            self.fd = fd
            self.events = events
        }
    }

    /// poll(2) for control threads that block on a few descriptors (discovery's HTTP
    /// client waits on its socket and a stop eventfd). Returns how many are ready; 0 on
    /// timeout. EINTR restarts the wait with the full timeout, which only ever lengthens a
    /// control-plane wait by the time the signal handler took.
    public static func poll(_ requests: inout [PollRequest], timeoutMilliseconds: Int) throws(SystemError) -> Int {
        var fds = requests.map { pollfd(fd: $0.fd, events: $0.events.rawValue, revents: 0) }
        let timeout = CInt(clamping: timeoutMilliseconds)
        let ready = try syscallValue(where: "poll") { Glibc.poll(&fds, nfds_t(fds.count), timeout) }
        for i in requests.indices { requests[i].returned = PollEvents(rawValue: fds[i].revents) }
        return Int(ready)
    }

    // MARK: process

    public static func sleep(milliseconds ms: Int) {
        var request = timespec(tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && Glibc.errno == EINTR { request = remaining }
    }

    /// Raises RLIMIT_NOFILE's soft limit towards `wanted` (and the hard limit too when
    /// running with the privilege to do so). Returns the soft limit in force afterwards.
    @discardableResult
    public static func raiseOpenFileLimit(to wanted: Int) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        let want = rlim_t(wanted)
        if limit.rlim_cur >= want { return Int(limit.rlim_cur) }
        if limit.rlim_max < want {
            var raised = rlimit(rlim_cur: want, rlim_max: want)
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return wanted }
        }
        var soft = rlimit(rlim_cur: min(want, limit.rlim_max), rlim_max: limit.rlim_max)
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &soft) == 0 { return Int(soft.rlim_cur) }
        return Int(limit.rlim_cur)
    }

    public static func processID() -> Int32 { getpid() }

    /// The host name (gethostname), or "" when it cannot be read.
    public static func hostName() -> String {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return "" }
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func cpuCount() -> Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// Monotonic clock in nanoseconds: the only clock timeouts use.
    @inline(__always)
    public static func monotonicNanoseconds() -> Int64 { cbs_monotonic_ns() }

    /// Wall clock in milliseconds since the epoch: only for log dates.
    public static func wallClockMilliseconds() -> Int64 { cbs_realtime_ms() }
}

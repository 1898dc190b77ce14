// epoll and eventfd, the two kernel objects an event loop is made of (NIO's Linux.swift).
import CBalancerShims
import Glibc

public enum Epoll {
    public struct Events: OptionSet, Sendable {
        public var rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: CBS_EPOLLIN)
        public static let writable = Events(rawValue: CBS_EPOLLOUT)
        public static let error = Events(rawValue: CBS_EPOLLERR)
        public static let hangup = Events(rawValue: CBS_EPOLLHUP)
        public static let readHangup = Events(rawValue: CBS_EPOLLRDHUP)
        public static let edgeTriggered = Events(rawValue: CBS_EPOLLET)
    }

    public static func create() throws(SystemError) -> CInt {
        try syscallValue(where: "epoll_create1") { cbs_epoll_create() }
    }

    public static func add(_ epfd: CInt, fd: CInt, events: Events, data: UInt64) throws(SystemError) {
        _ = try syscallValue(where: "epoll_ctl(ADD)") { cbs_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, events.rawValue, data) }
    }

    public static func modify(_ epfd: CInt, fd: CInt, events: Events, data: UInt64) throws(SystemError) {
        _ = try syscallValue(where: "epoll_ctl(MOD)") { cbs_epoll_ctl(epfd, EPOLL_CTL_MOD, fd, events.rawValue, data) }
    }

    /// Removing is best effort: close() removes the fd from the set anyway.
    public static func remove(_ epfd: CInt, fd: CInt) {
        _ = cbs_epoll_ctl(epfd, EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// The event array handed to epoll_wait: allocated once per loop, grown only when a
    /// wait fills it, so the steady state allocates nothing.
    public struct EventBuffer: ~Copyable {
        private(set) var storage: UnsafeMutablePointer<epoll_event>
        private(set) var capacity: Int

        public init(capacity: Int) {
            self.capacity = capacity
            self.storage = .allocate(capacity: capacity)
        }

        deinit { storage.deallocate() }

        /// Called after the events of a wait were handled: a full array means more
        /// were ready than fitted, so the next wait gets room for twice as many.
        public mutating func growIfFull(_ filled: Int) {
            if filled == capacity { grow() }
        }

        mutating func grow() {
            let newCapacity = capacity * 2
            storage.deallocate()
            storage = .allocate(capacity: newCapacity)
            capacity = newCapacity
        }

        @inline(__always) func flags(_ i: Int) -> Events { Events(rawValue: cbs_event_flags(storage, CInt(i))) }
        @inline(__always) func data(_ i: Int) -> UInt64 { cbs_event_data(storage, CInt(i)) }
    }

    /// Waits for events; returns how many slots of `buffer` were filled.
    public static func wait(_ epfd: CInt, into buffer: inout EventBuffer, timeoutMilliseconds: CInt) throws(SystemError) -> Int {
        let storage = buffer.storage
        let capacity = buffer.capacity
        while true {
            let n = cbs_epoll_wait(epfd, storage, CInt(capacity), timeoutMilliseconds)
            if n >= 0 {
                return Int(n)
            }
            if Glibc.errno == EINTR { return 0 }
            throw SystemError("epoll_wait", Errno(rawValue: Glibc.errno))
        }
    }
}

/// A non-blocking eventfd, used only to wake a loop from another thread.
public enum EventFD {
    public static func create() throws(SystemError) -> CInt {
        try syscallValue(where: "eventfd") { cbs_eventfd() }
    }

    public static func signal(_ fd: CInt) {
        var one: UInt64 = 1
        // EAGAIN means the counter is already non-zero: the loop will wake anyway.
        _ = Glibc.write(fd, &one, 8)
    }

    public static func drain(_ fd: CInt) {
        var value: UInt64 = 0
        _ = Glibc.read(fd, &value, 8)
    }
}

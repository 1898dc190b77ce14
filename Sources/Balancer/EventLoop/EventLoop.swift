// One epoll event loop, owned by one thread.
//
// Threading contract: everything in this class is touched only by the loop's own thread,
// except `execute(_:)`, which any thread may call. That is the single lock in the loop
// (the task queue), and it is never taken on the forwarding path.
//
// Registrations live in a slab. The epoll data word packs (generation, slot, side), so
// an event that arrives for a handler that was closed in the same batch, or whose slot
// was reused since, has a stale generation and is dropped (as NIO and haproxy do).
import Synchronization

/// Something the loop delivers events and deadlines to. Only called on the loop thread.
public protocol EventHandler: AnyObject {
    /// The handler's slab registration; assigned by `EventLoop.register`.
    var registration: EventLoop.Registration { get set }
    /// When the handler wants `deadlineReached` (monotonic ns); 0 for never. The handler
    /// may move it freely; the loop looks at it lazily (see DeadlineHeap).
    var deadline: Int64 { get }
    /// Bookkeeping for the loop: the deadline of the handler's live heap entry, 0 if none.
    /// Handlers only initialise it to 0.
    var filedDeadline: Int64 { get set }
    /// Readiness for one of the handler's descriptors (`side` is the handler's own tag).
    func ready(_ events: Epoll.Events, side: Int, loop: EventLoop)
    /// `deadline` has passed.
    func deadlineReached(loop: EventLoop)
    /// The loop asked to run it again (see `EventLoop.runAgain`), because it stopped
    /// early to be fair to other connections while its sockets were still ready.
    func resume(loop: EventLoop)
}

public final class EventLoop: @unchecked Sendable {
    public struct Registration: Sendable {
        public var slot: UInt32
        public var generation: UInt32
        public static let none = Registration(slot: .max, generation: 0)
        var isRegistered: Bool { slot != .max }
    }

    public let index: Int
    private let epfd: CInt
    private let wakeFD: CInt
    private var events: Epoll.EventBuffer
    private var handlers: [(any EventHandler)?] = []
    private var generations: [UInt32] = []
    private var freeSlots: [UInt32] = []
    private var timers = DeadlineHeap()
    private var runQueue: [Registration] = []
    private var runQueueSpare: [Registration] = []
    private let tasks = Mutex<[@Sendable () -> Void]>([])
    /// Set by `execute`, so that an iteration with no task takes no lock.
    private let tasksPending = Atomic<Bool>(false)
    /// The array tasks are swapped into to run, keeping both arrays' capacity.
    private var runningTasks: [@Sendable () -> Void] = []
    private var stopping = false
    /// Descriptors watched through an owner table (haproxy's fdtab), indexed by fd: their
    /// epoll data word names the fd, and the handler it goes to can change with a memory
    /// write instead of an epoll_ctl. Used for server connections that move between
    /// sessions and the idle pool on every request.
    private var fdOwners: [FDOwner] = []

    struct FDOwner {
        var registration = Registration.none
        var side = 0
        var generation: UInt32 = 0
    }

    /// Side value in a data word that marks an owner-table descriptor.
    private static let ownedMarker: UInt64 = 3

    /// Monotonic time of the current loop iteration, in ns. Reading the clock once per
    /// iteration (haproxy's `now_ms`) keeps clock_gettime out of the per-read path.
    public private(set) var now: Int64 = Posix.monotonicNanoseconds()

    /// Called at the end of every iteration, after events, deadlines and tasks (used to
    /// flush the log buffer once per batch instead of once per line).
    public var endOfIteration: (() -> Void)?

    public init(index: Int) throws(SystemError) {
        self.index = index
        self.epfd = try Epoll.create()
        self.wakeFD = try EventFD.create()
        self.events = Epoll.EventBuffer(capacity: 256)
        handlers.reserveCapacity(1024)
        generations.reserveCapacity(1024)
        // The wake fd is not in the slab: slot .max-1 marks it.
        try Epoll.add(epfd, fd: wakeFD, events: [.readable, .edgeTriggered], data: EventLoop.wakeData)
    }

    deinit {
        Posix.close(wakeFD)
        Posix.close(epfd)
    }

    private static let wakeData: UInt64 = .max

    // MARK: cross-thread

    /// Runs `task` on the loop thread soon. Safe from any thread.
    public func execute(_ task: @escaping @Sendable () -> Void) {
        tasks.withLock { $0.append(task) }
        tasksPending.store(true, ordering: .releasing)
        EventFD.signal(wakeFD)
    }

    /// Asks the loop to return from `run()` after the current iteration. Any thread.
    public func stop() {
        execute { [unowned self] in self.stopping = true }
    }

    // MARK: registration (loop thread only)

    /// Gives `handler` a slot. Its descriptors are then added with `watch`.
    public func register(_ handler: any EventHandler) {
        let slot: UInt32
        if let free = freeSlots.popLast() {
            slot = free
            handlers[Int(slot)] = handler
        } else {
            slot = UInt32(handlers.count)
            handlers.append(handler)
            generations.append(0)
        }
        generations[Int(slot)] &+= 1
        handler.registration = Registration(slot: slot, generation: generations[Int(slot)])
    }

    /// Releases the handler's slot. Events still queued for it are dropped by the
    /// generation check. The caller closes its descriptors itself.
    public func deregister(_ handler: any EventHandler) {
        let reg = handler.registration
        guard reg.isRegistered, Int(reg.slot) < handlers.count, generations[Int(reg.slot)] == reg.generation else { return }
        handlers[Int(reg.slot)] = nil
        generations[Int(reg.slot)] &+= 1   // invalidates epoll data words and heap entries at once
        freeSlots.append(reg.slot)
        handler.registration = .none
    }

    @inline(__always)
    private func dataWord(_ reg: Registration, side: Int) -> UInt64 {
        UInt64(reg.generation) << 32 | UInt64(reg.slot) << 2 | UInt64(side & 3)
    }

    /// Adds `fd` to the epoll set for `handler`, edge-triggered. `side` (0...2) is echoed back.
    public func watch(_ fd: CInt, side: Int, events: Epoll.Events, for handler: any EventHandler) throws(SystemError) {
        try Epoll.add(epfd, fd: fd, events: events.union(.edgeTriggered), data: dataWord(handler.registration, side: side))
    }

    public func rewatch(_ fd: CInt, side: Int, events: Epoll.Events, for handler: any EventHandler) throws(SystemError) {
        try Epoll.modify(epfd, fd: fd, events: events.union(.edgeTriggered), data: dataWord(handler.registration, side: side))
    }

    public func unwatch(_ fd: CInt) {
        Epoll.remove(epfd, fd: fd)
    }

    // MARK: owner-table descriptors (loop thread only)

    /// Adds `fd` to the epoll set, delivering its events to `handler` with `side` (any
    /// Int: the idle pool uses the fd itself). Sides 0...2 of slot registrations and this
    /// table never collide: the data word's low bits say which one it is.
    public func watchOwned(_ fd: CInt, events: Epoll.Events, owner handler: any EventHandler, side: Int) throws(SystemError) {
        let index = Int(fd)
        if index >= fdOwners.count {
            fdOwners.append(contentsOf: repeatElement(FDOwner(), count: max(index + 1 - fdOwners.count, 256)))
        }
        fdOwners[index].generation &+= 1
        fdOwners[index].registration = handler.registration
        fdOwners[index].side = side
        let data = UInt64(fdOwners[index].generation) << 32 | UInt64(UInt32(fd)) << 2 | EventLoop.ownedMarker
        try Epoll.add(epfd, fd: fd, events: events.union(.edgeTriggered), data: data)
    }

    /// Hands `fd`'s future events to another handler. No system call.
    @inline(__always)
    public func setOwner(_ fd: CInt, to handler: any EventHandler, side: Int) {
        fdOwners[Int(fd)].registration = handler.registration
        fdOwners[Int(fd)].side = side
    }

    public func modifyOwned(_ fd: CInt, events: Epoll.Events) throws(SystemError) {
        let owner = fdOwners[Int(fd)]
        let data = UInt64(owner.generation) << 32 | UInt64(UInt32(fd)) << 2 | EventLoop.ownedMarker
        try Epoll.modify(epfd, fd: fd, events: events.union(.edgeTriggered), data: data)
    }

    /// Forgets an owned fd before it is closed: events still queued for it are dropped.
    public func releaseOwned(_ fd: CInt) {
        fdOwners[Int(fd)].generation &+= 1
        fdOwners[Int(fd)].registration = .none
    }

    /// Makes sure the handler's current `deadline` is filed. Cheap when the deadline only
    /// moved later (the common case: activity on a connection): nothing is pushed then.
    @inline(__always)
    public func scheduleDeadline(for handler: any EventHandler) {
        let deadline = handler.deadline
        guard deadline > 0, handler.registration.isRegistered else { return }
        let filed = handler.filedDeadline
        if filed != 0 && filed <= deadline { return }
        handler.filedDeadline = deadline
        timers.push(.init(deadline: deadline, slot: handler.registration.slot, generation: handler.registration.generation))
    }

    /// Runs `handler.resume` in the next iteration (used after a fairness cut-off).
    public func runAgain(_ handler: any EventHandler) {
        runQueue.append(handler.registration)
    }

    /// Visits every registered handler (shutdown only; not a hot path).
    public func forEachHandler(_ body: (any EventHandler) -> Void) {
        for case let handler? in handlers { body(handler) }
    }

    @inline(__always)
    private func handler(for reg: Registration) -> (any EventHandler)? {
        let slot = Int(reg.slot)
        guard slot < handlers.count, generations[slot] == reg.generation else { return nil }
        return handlers[slot]
    }

    // MARK: running

    /// The loop body. Returns after `stop()`.
    public func run() {
        // Tasks queued before the loop started (tables published while discovery waited
        // for its first answers) apply before the first event is handled.
        runTasks()
        while !stopping {
            let timeout = nextTimeoutMilliseconds()
            let count: Int
            do {
                count = try Epoll.wait(epfd, into: &events, timeoutMilliseconds: timeout)
            } catch {
                // epoll_wait only fails on programming errors (EINVAL/EFAULT); say so and stop.
                fatalError("event loop \(index): \(error)")
            }
            now = Posix.monotonicNanoseconds()
            for i in 0..<count {
                let data = events.data(i)
                if data == EventLoop.wakeData {
                    EventFD.drain(wakeFD)
                    continue
                }
                if data & 3 == EventLoop.ownedMarker {
                    let fd = Int((data & 0xFFFF_FFFF) >> 2)
                    guard fd < fdOwners.count, fdOwners[fd].generation == UInt32(truncatingIfNeeded: data >> 32),
                          let handler = handler(for: fdOwners[fd].registration) else { continue }
                    handler.ready(events.flags(i), side: fdOwners[fd].side, loop: self)
                    continue
                }
                let reg = Registration(slot: UInt32(truncatingIfNeeded: (data & 0xFFFF_FFFF) >> 2),
                                       generation: UInt32(truncatingIfNeeded: data >> 32))
                guard let handler = handler(for: reg) else { continue }   // stale event
                handler.ready(events.flags(i), side: Int(data & 3), loop: self)
            }
            events.growIfFull(count)
            runDeferred()
            runDeadlines()
            runTasks()
            endOfIteration?()
        }
        runTasks()
        endOfIteration?()
    }

    private func nextTimeoutMilliseconds() -> CInt {
        if !runQueue.isEmpty { return 0 }
        if tasksPending.load(ordering: .acquiring) { return 0 }
        guard let earliest = timers.earliest else { return -1 }
        let nowNs = Posix.monotonicNanoseconds()
        if earliest <= nowNs { return 0 }
        // Round up so we never wake a hair early and spin.
        return CInt(min((earliest - nowNs + 999_999) / 1_000_000, 60_000))
    }

    private func runDeferred() {
        guard !runQueue.isEmpty else { return }
        swap(&runQueue, &runQueueSpare)
        for reg in runQueueSpare {
            handler(for: reg)?.resume(loop: self)
        }
        runQueueSpare.removeAll(keepingCapacity: true)
    }

    private func runDeadlines() {
        while let earliest = timers.earliest, earliest <= now {
            let entry = timers.pop()!
            guard let handler = handler(for: Registration(slot: entry.slot, generation: entry.generation)) else { continue }
            // An older entry superseded by an earlier one that was already handled.
            if entry.deadline != handler.filedDeadline { continue }
            handler.filedDeadline = 0
            let current = handler.deadline
            if current == 0 { continue }   // the handler no longer wants a deadline
            if current > now {
                // Moved later since it was filed: re-file at the new time.
                scheduleDeadline(for: handler)
                continue
            }
            handler.deadlineReached(loop: self)
        }
    }

    private func runTasks() {
        guard tasksPending.load(ordering: .acquiring) else { return }
        tasksPending.store(false, ordering: .releasing)
        tasks.withLock { queue in swap(&queue, &runningTasks) }
        for task in runningTasks { task() }
        runningTasks.removeAll(keepingCapacity: true)
    }
}

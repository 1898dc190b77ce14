// A listening socket owned by one loop. Each loop has its own SO_REUSEPORT listener per
// bind address, so accepting never crosses threads and needs no lock.
final class Listener: EventHandler {
    var registration = EventLoop.Registration.none
    var deadline: Int64 = 0
    var filedDeadline: Int64 = 0
    let fd: CInt
    /// The frontend version new connections get. A reload that changes the frontend but
    /// keeps this bind replaces it (a task): the socket stays open, so nothing queued is lost.
    var frontend: FrontendRuntime
    /// The bind this socket listens for (the key of its TLS settings).
    let bind: HostPort
    /// The TLS context of an `ssl` bind: new connections handshake with it. Replaced by a
    /// task from Proxy.reloadCertificates; connections keep the one they started with.
    var tls: TLSContext?
    unowned let worker: ProxyWorker
    /// Accepting stopped (maxconn reached, or out of descriptors) while connections may
    /// be waiting: edge-triggered epoll will not tell us again, so we must retry.
    var paused = false
    var closed = false

    /// Accepts per wake-up before yielding to the other connections of the loop.
    static let batch = 64
    /// While paused, how often to look for a free slot (a slot freed on this loop
    /// resumes at once; this covers slots freed on other loops).
    static let pauseRetry: Int64 = 20_000_000

    init(fd: CInt, frontend: FrontendRuntime, bind: HostPort, tls: TLSContext?, worker: ProxyWorker) {
        self.fd = fd
        self.frontend = frontend
        self.bind = bind
        self.tls = tls
        self.worker = worker
    }

    func ready(_ events: Epoll.Events, side: Int, loop: EventLoop) {
        acceptBatch(loop: loop)
    }

    func deadlineReached(loop: EventLoop) {
        deadline = 0
        if paused { acceptBatch(loop: loop) }
    }

    func resume(loop: EventLoop) {
        acceptBatch(loop: loop)
    }

    func acceptBatch(loop: EventLoop) {
        guard !closed else { return }
        paused = false
        for _ in 0..<Listener.batch {
            // Accept only with a descriptor in reserve for the server socket (SpareDescriptor).
            do throws(SystemError) {
                try worker.spare.restore()
            } catch {
                worker.noteResourceShortage(error)
                pause(loop: loop)
                return
            }
            guard worker.shared.reserveSlot() else {
                pause(loop: loop)
                return
            }
            do {
                switch try Posix.accept(fd) {
                case .wouldBlock:
                    worker.shared.releaseSlot()
                    return
                case .processed(let (client, peer)):
                    worker.startSession(client: client, peer: peer, frontend: frontend, tls: tls)
                }
            } catch {
                worker.shared.releaseSlot()
                switch error.errno {
                case .tooManyOpenFiles, .tooManyOpenFilesInSystem:
                    // Out of descriptors: the kernel keeps the connection queued; retry
                    // shortly instead of spinning on an error.
                    worker.noteResourceShortage(error)
                    pause(loop: loop)
                    return
                case .connectionAborted:
                    continue   // the client gave up while queued
                default:
                    worker.noteResourceShortage(error)
                    pause(loop: loop)
                    return
                }
            }
        }
        loop.runAgain(self)   // more may be queued: come back after serving others
    }

    private func pause(loop: EventLoop) {
        paused = true
        deadline = loop.now + Listener.pauseRetry
        loop.scheduleDeadline(for: self)
    }

    func close(loop: EventLoop) {
        guard !closed else { return }
        closed = true
        loop.unwatch(fd)
        Posix.close(fd)
        loop.deregister(self)
    }
}

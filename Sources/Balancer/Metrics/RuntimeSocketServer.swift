// The Runtime API's unix socket (haproxy's `stats socket PATH [mode M] [level L]`): one
// thread, one poll(2) over the listener and the open connections, RuntimeAPI for the
// answers. Several clients at once, because hatop keeps an interactive connection open
// for as long as it runs while scripts come and go beside it; at most `maximumClients`
// (haproxy's `stats maxconn`, 10 by default), further connections wait in the backlog.
//
// It is for people and scripts, never on the forwarding path: commands run on this thread
// and may take a snapshot of every counter.
import Synchronization

public final class RuntimeSocketServer: Sendable {
    public let config: RuntimeSocketConfig
    private let api: RuntimeAPI
    private let listener: CInt
    /// Signalled by `stop` to end the poll at once.
    private let wake: CInt
    private let stopping = Atomic<Bool>(false)
    private let thread = Mutex<LoopThread?>(nil)
    /// For handing the listeners over (`_getsocks`), and what `_softstop` calls: the
    /// daemon's graceful stop (it must not block this thread).
    private let proxy: Proxy
    private let softStop: (@Sendable (_ newOwner: Int32?) -> Void)?
    /// What `reload` runs (haproxy's master CLI command; the daemon starts its successor),
    /// nil where nobody can: the embedder's proxy. It answers later, through `finish`.
    private let reload: (@Sendable (_ finish: @escaping @Sendable (String) -> Void) -> Void)?
    /// Answers of `reload` that came back from another thread, by client, for `run` to
    /// send (it is woken through `wake`).
    private let finishedAnswers = Mutex<[(client: UInt64, text: String)]>([])
    /// The socket file this server bound, so that `stop` removes only its own: after a
    /// handover the path names the new process's socket.
    private let file: UnixSocket.FileIdentity?
    /// How long a connection that took the listeners may wait before its `_softstop`:
    /// the new process builds its proxy and starts its loops meanwhile.
    static let handoverTimeout: Duration = .seconds(120)

    public static let maximumClients = 10
    /// A line longer than this is not a command: haproxy's buffer is 16 KiB.
    static let maximumLine = 16 * 1024

    /// Binds the socket now (so a bad path fails at start-up); `start` begins answering.
    /// A stale socket file at `config.path` is replaced.
    ///
    /// `softStop`: what a `_softstop` from the process that took the listeners runs
    /// (a socket with `expose-fd listeners` only), given that process's pid; nil refuses
    /// the handover. `reload`: what the `reload` command runs (level admin); nil answers
    /// that this process cannot.
    public init(proxy: Proxy, config: RuntimeSocketConfig, version: String,
                softStop: (@Sendable (_ newOwner: Int32?) -> Void)? = nil,
                reload: (@Sendable (_ finish: @escaping @Sendable (String) -> Void) -> Void)? = nil) throws(SystemError) {
        self.config = config
        self.proxy = proxy
        self.softStop = softStop
        self.reload = reload
        api = RuntimeAPI(proxy: proxy, version: version)
        listener = try UnixSocket.listen(path: config.path, mode: config.mode)
        file = UnixSocket.fileIdentity(config.path)
        do throws(SystemError) {
            wake = try EventFD.create()
        } catch {
            Posix.close(listener)
            UnixSocket.removeFile(config.path)
            throw error
        }
    }

    deinit {
        Posix.close(listener)
        Posix.close(wake)
    }

    public func start() {
        thread.withLock { $0 = LoopThread(name: "balancerd-cli") { [self] in self.run() } }
    }

    /// Ends the thread, closes every client and removes the socket file.
    public func stop() {
        stopping.store(true, ordering: .releasing)
        EventFD.signal(wake)
        let running = thread.withLock { thread in
            defer { thread = nil }
            return thread
        }
        running?.join()
        if let file, UnixSocket.fileIdentity(config.path) == file {
            UnixSocket.removeFile(config.path)
        }
    }

    /// One connection: its unanswered input, its unsent output, and haproxy's session.
    private struct Client {
        var id: UInt64
        var fd: CInt
        var session: RuntimeSession
        var input: [UInt8] = []
        var output: [UInt8] = []
        var sent = 0
        var deadline: Int64
        /// The client closed its side: answer what it sent, then close.
        var peerClosed = false
        /// This client took the listeners (`_getsocks`): it may send `_softstop`.
        var tookListeners = false
        /// A `reload` runs for this client: no further line is answered until it ends.
        var waitingForReload = false
    }

    private func run() {
        var clients: [Client] = []
        var nextID: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while !stopping.load(ordering: .acquiring) {
            var requests = [Posix.PollRequest(fd: wake, events: .readable)]
            if clients.count < Self.maximumClients { requests.append(Posix.PollRequest(fd: listener, events: .readable)) }
            // A client that waits for its `reload` and has closed its side would be
            // readable (EOF) on every poll: it is not watched until its answer comes.
            for client in clients where !(client.waitingForReload && client.peerClosed) {
                requests.append(Posix.PollRequest(fd: client.fd, events: client.sent < client.output.count ? .writable : .readable))
            }
            let now = Posix.monotonicNanoseconds()
            let nearest = clients.map(\.deadline).min().map { max(0, ($0 - now) / 1_000_000) + 1 } ?? 1000
            guard (try? Posix.poll(&requests, timeoutMilliseconds: Int(min(nearest, 1000)))) != nil else { continue }
            if stopping.load(ordering: .acquiring) { break }
            if !requests[0].returned.isEmpty {
                EventFD.drain(wake)
                deliverFinishedAnswers(to: &clients)
            }

            for request in requests.dropFirst() where !request.returned.isEmpty {
                if request.fd == listener {
                    acceptClients(into: &clients, nextID: &nextID)
                } else if let index = clients.firstIndex(where: { $0.fd == request.fd }) {
                    if !serve(&clients[index], buffer: &buffer) {
                        Posix.close(clients[index].fd)
                        clients.remove(at: index)
                    }
                }
            }
            // Idle clients (haproxy's CLI timeout) and clients that stopped reading.
            let later = Posix.monotonicNanoseconds()
            clients.removeAll { client in
                guard client.deadline <= later else { return false }
                Posix.close(client.fd)
                return true
            }
        }
        for client in clients { Posix.close(client.fd) }
    }

    private func acceptClients(into clients: inout [Client], nextID: inout UInt64) {
        while clients.count < Self.maximumClients, case .processed(let fd)? = try? UnixSocket.accept(listener) {
            let session = RuntimeSession(level: config.level)
            nextID += 1
            clients.append(Client(id: nextID, fd: fd, session: session, deadline: Self.deadline(after: session.timeout)))
        }
    }

    /// `reload`: starts the daemon's reload and holds the client until its answer. The
    /// answer comes from another thread; `deliverFinishedAnswers` sends it.
    private func startReload(_ client: inout Client) -> String {
        guard client.session.level == .admin else { return "Permission denied\n" }
        guard let reload else {
            return "Success=0\n--\nreload: this process cannot start its successor (only the balancerd daemon can)\n"
        }
        client.waitingForReload = true
        client.session.timeout = Self.handoverTimeout
        let id = client.id
        reload { [self] text in
            finishedAnswers.withLock { $0.append((id, text)) }
            EventFD.signal(wake)
        }
        return ""
    }

    private func deliverFinishedAnswers(to clients: inout [Client]) {
        let answers = finishedAnswers.withLock { answers in
            defer { answers.removeAll() }
            return answers
        }
        for answer in answers {
            guard let index = clients.firstIndex(where: { $0.id == answer.client }) else { continue }
            clients[index].waitingForReload = false
            clients[index].session.closing = true
            clients[index].output.append(contentsOf: answer.text.utf8)
            if !answerLines(&clients[index]) {
                Posix.close(clients[index].fd)
                clients.remove(at: index)
            }
        }
    }

    private static func deadline(after timeout: Duration) -> Int64 {
        Posix.monotonicNanoseconds() + timeout.nanoseconds
    }

    /// Reads, answers complete lines, writes. Returns false when the connection is done.
    private func serve(_ client: inout Client, buffer: inout [UInt8]) -> Bool {
        if client.sent < client.output.count {
            let result = client.output[client.sent...].withUnsafeBytes { try? Posix.write(client.fd, $0) }
            switch result {
            case .processed(let n)?: client.sent += n
            case .wouldBlock?: return true
            case nil: return false
            }
            if client.sent < client.output.count { return true }
            client.output.removeAll(keepingCapacity: true)
            client.sent = 0
            if client.session.closing { return false }
            // Lines that arrived while the answer was going out.
            return answerLines(&client)
        }
        let result = buffer.withUnsafeMutableBytes { try? Posix.read(client.fd, $0) }
        switch result {
        case .processed(let n)? where n > 0:
            client.input.append(contentsOf: buffer[..<n])
            client.deadline = Self.deadline(after: client.session.timeout)
        case .wouldBlock?: return true
        default:
            client.peerClosed = true
        }
        return answerLines(&client)
    }

    /// `_getsocks`: sends every listening socket to the client (Handover.swift), which
    /// later says `_softstop`. Refused, with a line that says why, unless the socket has
    /// `expose-fd listeners`, the session is at level admin (whoever holds the listeners
    /// can accept every client), and the daemon gave a way to stop.
    private func handOverListeners(_ client: inout Client) -> String {
        guard !client.tookListeners else { return "_getsocks: the listeners were already sent on this connection\n" }
        guard config.exposeFDListeners, softStop != nil else {
            client.session.closing = true
            return "_getsocks: \(config.path) does not expose the listeners (its 'stats socket' line needs 'expose-fd listeners')\n"
        }
        guard client.session.level == .admin else {
            client.session.closing = true
            return "Permission denied\n"
        }
        let sent: Result<Void, SystemError>? = proxy.withListenerSockets { sockets in
            Result(catching: { () throws(SystemError) -> Void in try Handover.send(sockets, pid: Posix.processID(), over: client.fd) })
        }
        switch sent {
        case nil:
            client.session.closing = true
            return "_getsocks: balancerd is stopping and has closed its listeners\n"
        case .failure?:
            // The header may be half sent: the connection is useless now.
            client.session.closing = true
            client.peerClosed = true
            return ""
        case .success?:
            client.tookListeners = true
            client.session.closing = false
            client.session.timeout = Self.handoverTimeout
            return ""
        }
    }

    /// Runs every complete line of input (a last line without "\n" too once the peer has
    /// closed) until the session closes; queues the answers and tries to send them.
    private func answerLines(_ client: inout Client) -> Bool {
        while !client.session.closing && !client.waitingForReload {
            let line: [UInt8]
            if let newline = client.input.firstIndex(of: UInt8(ascii: "\n")) {
                line = Array(client.input[..<newline])
                client.input.removeSubrange(...newline)
            } else if client.peerClosed && !client.input.isEmpty {
                line = client.input
                client.input.removeAll()
            } else {
                break
            }
            let text = String(decoding: line, as: UTF8.self)
            let answer: String
            switch text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }) {
            case ["_getsocks"]:
                answer = handOverListeners(&client)
            case ["_softstop"] where client.tookListeners:
                // The process that took the listeners is accepting: stop, gracefully.
                answer = "stopping\n"
                client.session.closing = true
                softStop?(UnixSocket.peerProcessID(client.fd))
            case ["reload"]:
                answer = startReload(&client)
            default:
                answer = api.execute(line: text, session: &client.session)
            }
            client.output.append(contentsOf: answer.utf8)
            client.deadline = Self.deadline(after: client.session.timeout)
        }
        if client.input.count > Self.maximumLine { return false }
        if client.output.isEmpty { return client.waitingForReload || !(client.session.closing || client.peerClosed) }
        // Send now; what does not fit goes when the socket is writable.
        let result = client.output.withUnsafeBytes { try? Posix.write(client.fd, $0) }
        switch result {
        case .processed(let n)?: client.sent = n
        case .wouldBlock?: break
        case nil: return false
        }
        if client.sent < client.output.count { return true }
        client.output.removeAll(keepingCapacity: true)
        client.sent = 0
        return !(client.session.closing || client.peerClosed)
    }
}

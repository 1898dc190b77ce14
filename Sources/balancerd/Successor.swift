// The reload that replaces the process: the Runtime API's `reload` (haproxy's master CLI
// word) and SIGUSR2 (nginx's and haproxy's "start the new binary"). balancerd starts the
// binary at the path it was started from, with the arguments it was started with, plus
// `-x SOCKET`: the new process takes the listeners over that socket, starts its loops and
// sends `_softstop` (Handover.swift). The reload has worked when that `_softstop` comes
// from the process started here, and failed when the process exits first.
//
// Because the path is read again, a binary replaced on disk (a package upgrade) is what
// runs next, as with haproxy's `-Ws` master; because the file is read again by the new
// process, every change in it applies, binds included.
import Balancer
import Glibc
import Synchronization

final class Successor: Sendable {
    /// argv[0] as started, made absolute when it was relative with a slash (the new
    /// process must find it whatever the working directory is then); a bare name is
    /// looked up in PATH, as the shell did.
    let executable: String
    /// The arguments after argv[0], without an earlier `-x PATH`/`--takeover PATH`.
    let arguments: [String]
    /// The Runtime API socket with `expose-fd listeners` the new process takes over from.
    let socketPath: String?

    private enum State {
        case idle
        /// `started`: when, for the timeout. `waiting`: who hears the outcome.
        case starting(pid: Int32, started: Int64, waiting: [@Sendable (Outcome) -> Void])
        /// The successor took over: nothing more to start from this process.
        case replaced(pid: Int32)
    }
    private let state = Mutex<State>(.idle)

    enum Outcome: Sendable {
        case tookOver(pid: Int32)
        case failed(String)

        /// What happened, in one line: the log line, and the answer's last line.
        var message: String {
            switch self {
            case .tookOver(let pid):
                return "balancerd: reload: pid \(pid) took the listeners; pid \(Posix.processID()) finishes its connections and exits"
            case .failed(let reason):
                return "balancerd: reload failed: \(reason); pid \(Posix.processID()) keeps serving"
            }
        }

        /// The answer of the Runtime API's `reload`, in haproxy 2.7's master CLI form:
        /// `Success=1` or `Success=0`, `--`, then what happened.
        var answer: String {
            if case .tookOver = self { return "Success=1\n--\n\(message)\n" }
            return "Success=0\n--\n\(message)\n"
        }
    }

    /// How long the successor may take to send `_softstop`: less than the Runtime API
    /// holds a waiting client (120 s), so that the client hears the failure.
    static let timeout: Duration = .seconds(90)

    init(commandLine: [String], socketPath: String?) {
        var executable = commandLine.first ?? "balancerd"
        if executable.contains("/") && !executable.hasPrefix("/") {
            if let directory = getcwd(nil, 0) {
                executable = String(cString: directory) + "/" + executable
                free(directory)
            }
        }
        self.executable = executable
        var arguments: [String] = []
        var rest = commandLine.dropFirst()
        while let argument = rest.popFirst() {
            if argument == "-x" || argument == "--takeover" {
                _ = rest.popFirst()
            } else if !argument.hasPrefix("--takeover=") {
                arguments.append(argument)
            }
        }
        self.arguments = arguments
        self.socketPath = socketPath
    }

    /// Starts the successor, or joins the start already under way; `finish` hears the
    /// outcome once, from whichever thread learns it.
    func start(_ finish: @escaping @Sendable (Outcome) -> Void) {
        guard let socketPath else {
            finish(.failed("no 'stats socket … level admin expose-fd listeners' (or --stats-socket) for the new process to take the listeners from"))
            return
        }
        let argv = [executable] + arguments + ["-x", socketPath]
        enum Next { case joined, started(Int32), refused(String) }
        // Spawned under the lock: its `_softstop` (on the Runtime API's thread) must find
        // the pid recorded, however fast it comes.
        let next: Next = state.withLock { state in
            switch state {
            case .starting(let pid, let started, var waiting):
                waiting.append(finish)
                state = .starting(pid: pid, started: started, waiting: waiting)
                return .joined
            case .replaced(let pid):
                return .refused("pid \(pid) took the listeners already; reload that one")
            case .idle:
                switch Self.spawn(argv) {
                case .failure(let error):
                    return .refused("cannot start \(executable): \(error)")
                case .success(let pid):
                    state = .starting(pid: pid, started: Posix.monotonicNanoseconds(), waiting: [finish])
                    return .started(pid)
                }
            }
        }
        switch next {
        case .joined:
            return
        case .refused(let reason):
            finish(.failed(reason))
        case .started(let pid):
            ControlLog.line("balancerd: reload: started pid \(pid): \(argv.joined(separator: " "))")
            // Its exit ends the reload if it comes before its `_softstop`; either way
            // this thread reaps it, so it never lingers as a zombie.
            let watcher = LoopThread(name: "balancerd-next") { [self] in
                var status: CInt = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                let signal = status & 0x7f
                let how = signal == 0 ? "exited with status \((status >> 8) & 0xff)" : "was killed by signal \(signal)"
                complete(pid: pid, .failed("the new process (pid \(pid)) \(how) before taking the listeners"))
            }
            watcher.detach()   // it ends with the child; nobody joins it
        }
    }

    /// `_softstop` from `pid`: true when that is the successor started here (the reload
    /// worked). Another process that took the listeners (`-x` by hand) is not ours.
    @discardableResult
    func tookOver(by pid: Int32?) -> Bool {
        guard let pid, pid > 0 else { return false }
        return complete(pid: pid, .tookOver(pid: pid))
    }

    /// A `reload` still waiting after `timeout`: answered as failed. The process started
    /// is left alone: it may be serving already, and killing it could drop connections.
    func expire(now: Int64) {
        let late: Int32? = state.withLock { state in
            guard case .starting(let pid, let started, _) = state, now - started > Self.timeout.nanoseconds else { return nil }
            return pid
        }
        if let late {
            complete(pid: late, .failed("the new process (pid \(late)) did not take the listeners within \(Self.timeout)"))
        }
    }

    @discardableResult
    private func complete(pid: Int32, _ outcome: Outcome) -> Bool {
        let waiting: [@Sendable (Outcome) -> Void]? = state.withLock { state in
            guard case .starting(let current, _, let waiting) = state, current == pid else { return nil }
            if case .tookOver = outcome { state = .replaced(pid: pid) } else { state = .idle }
            return waiting
        }
        guard let waiting else { return false }
        for finish in waiting { finish(outcome) }
        return true
    }

    /// posix_spawnp(3) with a clean signal state: the control signals this process blocks
    /// and SIGPIPE, which the proxy ignores, would otherwise pass to the new program.
    private static func spawn(_ argv: [String]) -> Result<Int32, SystemError> {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var cStrings = argv.map { strdup($0) }
        defer { for pointer in cStrings { free(pointer) } }
        cStrings.append(nil)
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], nil, &attributes, cStrings, environ)
        guard rc == 0 else { return .failure(SystemError("posix_spawnp", Errno(rawValue: rc))) }
        return .success(pid)
    }
}

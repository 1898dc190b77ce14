// balancerd: arguments, wiring and signals. Everything that moves bytes is in the
// Balancer module and the discovery wiring in Discovery (both usable by an embedder);
// this file only decides what to run and when to stop.
import Balancer
import Discovery
import Glibc
import Synchronization

let version = "0.1.0"

func fail(_ message: String, code: Int32) -> Never {
    ControlLog.line(message)
    exit(code)
}

let arguments = Array(CommandLine.arguments.dropFirst())
let options: CommandLineOptions
do {
    options = try CommandLineOptions.parse(arguments)
} catch {
    ControlLog.line("balancerd: \(error.message)")
    ControlLog.line(CommandLineOptions.usage)
    exit(2)
}

switch options.command {
case .help:
    print(CommandLineOptions.usage)
    exit(0)
case .version:
    print("balancerd \(version)")
    exit(0)
case .check:
    let path = options.configPath ?? ""
    do {
        let configuration = try HAProxyParser.load(path: path)
        // As `haproxy -c`: the certificates must load, not only parse as a path.
        for frontend in configuration.frontends {
            do {
                _ = try Proxy.tlsContexts(of: frontend)
            } catch {
                fail("\(path): \(error)", code: 1)
            }
        }
        let servers = configuration.backends.reduce(0) { $0 + $1.servers.count }
        print("\(path): configuration is valid (\(configuration.frontends.count) frontend(s), \(configuration.backends.count) backend(s), \(servers) server(s))")
        exit(0)
    } catch {
        fail("\(error)", code: 1)
    }
case .exportHAProxy:
    do {
        var configuration = try options.configuration()
        // One answer of every discovery source, asked at once: discovered servers, and
        // discovered routes (--routes-from-tags, `discovery consul URL routes`) written as
        // the running proxy writes them at /haproxy.cfg.
        let snapshot = try DiscoveryRunner.snapshot(of: configuration, consul: options.consulReadPolicy, timeout: .seconds(5))
        configuration = snapshot.configuration
        for (frontend, set) in snapshot.routes.sorted(by: { $0.key < $1.key }) {
            configuration = configuration.applyingRoutes(set, frontend: frontend)
        }
        let source = options.configPath.map { "from \($0)" } ?? "from the command line"
        print(HAProxyWriter.write(configuration, header: [
            "haproxy.cfg exported by balancerd \(version) \(source)",
            "haproxy -c -f accepts it; balance, weights, backups, checks, timeouts, retries and",
            "redispatch behave as in balancerd (see PARITY.md for the differences on purpose).",
        ]))
        exit(0)
    } catch {
        fail("balancerd: \(error)", code: 1)
    }
case .reload(let socket):
    exit(ReloadCommand.run(socket: socket))
case .run:
    break
}

// Signals: the control signals are blocked in every thread, before any thread exists,
// and taken synchronously with sigtimedwait by the main thread below: no
// async-signal-safety questions anywhere. (SIGPIPE is the library's business:
// `Proxy.start()` ignores it.)
// SIGUSR1 is haproxy's soft stop; here it is also how the Runtime API thread hands a
// `_softstop` (the end of a handover) to this thread. SIGUSR2 starts the successor, as
// the Runtime API's `reload` does (nginx's and haproxy's master's binary upgrade).
let controlSignals: [CInt] = [SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2]
_ = controlSignals.withUnsafeBufferPointer { blockSignals($0) }

var configuration: Configuration
do {
    configuration = try options.configuration()
} catch {
    fail("balancerd: \(error)", code: 1)
}

var demo: DemoBackends?
if options.demo {
    do {
        let backends = try DemoBackends.start(count: 2)
        demo = backends
        configuration = DemoBackends.configure(configuration, servers: backends.addresses, listenGiven: options.listen != nil)
    } catch {
        fail("balancerd: demo backends: \(error)", code: 1)
    }
}

// A file without frontend or listen section is valid (Debian's default haproxy.cfg has
// none, and haproxy starts on it, serving nothing); running it would only idle.
if configuration.frontends.isEmpty {
    fail("balancerd: \(options.configPath ?? "the configuration") has no frontend or listen section: nothing to listen on (balancerd check accepts it; add a frontend to run it)", code: 1)
}

let threads = options.threads ?? configuration.global.threads ?? Posix.cpuCount()
// The descriptor budget: raise the soft limit to the hard one, as haproxy does, then
// either check the user's maxconn against it or derive maxconn from it.
let fileLimit = Posix.raiseOpenFileLimit(to: Int(Int32.max))
if let maxconn = configuration.global.maxConnections, MaxConnections.descriptors(for: maxconn) > fileLimit {
    ControlLog.line("balancerd: warning: open file limit is \(fileLimit), below the \(MaxConnections.descriptors(for: maxconn)) descriptors that maxconn \(maxconn) needs; accepts fail once the limit is reached (leave maxconn unset to derive it from the limit)")
}

// A handover (-x): the listening sockets of the running balancerd, taken before anything
// binds. Without them, exit 1 as haproxy does: binding beside the old process would
// either fail or leave two processes serving with nobody telling the old one to stop.
var handover: Handover.Received?
if let path = options.takeover {
    do {
        let received = try Handover.receive(from: path)
        handover = received
        ControlLog.line("balancerd: took \(received.descriptors.count) listening socket(s) from pid \(received.oldPID) over \(path)")
    } catch {
        fail("balancerd: -x \(path): \(error)", code: 1)
    }
}

let proxy: Proxy
do {
    // BALANCERD_LISTENER=shared switches to one listener shared by all loops instead of
    // one SO_REUSEPORT listener per loop; only Benchmarks/run uses it, to compare.
    // BALANCERD_SPLICE=off forwards through buffers instead of pipes, and
    // BALANCERD_SPLICE_THRESHOLD=BYTES moves HTTP mode's splice threshold, for the same purpose.
    let shared = getenv("BALANCERD_LISTENER").map { String(cString: $0) } == "shared"
    let splice = getenv("BALANCERD_SPLICE").map { String(cString: $0) } != "off"
    var proxyOptions = ProxyOptions(threads: threads, quiet: options.quiet, reusePort: !shared, splice: splice)
    if let threshold = getenv("BALANCERD_SPLICE_THRESHOLD").flatMap({ Int(String(cString: $0)) }), threshold > 0 {
        proxyOptions.spliceThreshold = threshold
    }
    proxyOptions.inheritedListeners = handover?.descriptors ?? []
    proxy = try Proxy(configuration: configuration, options: proxyOptions)
} catch {
    fail("balancerd: \(error)", code: 1)
}
if handover != nil {
    ControlLog.line("balancerd: listening on \(proxy.inheritedAdopted) inherited socket(s), bound \(proxy.boundAddresses.count) address(es) in all")
    if !proxy.inheritedUnused.isEmpty {
        ControlLog.line("balancerd: closed \(proxy.inheritedUnused.count) inherited socket(s) that no bind uses: \(proxy.inheritedUnused.joined(separator: ", "))")
    }
}

for bound in proxy.boundAddresses {
    guard let frontend = configuration.frontends.first(where: { $0.name == bound.frontend }),
          let backend = configuration.backend(named: frontend.defaultBackend) else { continue }
    let servers = backend.servers.map { server in
        "\(server.name)@\(server.address)/w\(server.weight)\(server.backup ? "/backup" : "")"
    }.joined(separator: ",")
    ControlLog.line("balancerd: listening frontend=\(frontend.name) addr=\(bound.address) mode=\(frontend.mode.rawValue) threads=\(threads) backend=\(backend.name) servers=\(servers)")
}
if let demo, let first = proxy.boundAddresses.first {
    let host = first.address.host == "0.0.0.0" ? "127.0.0.1" : first.address.host
    print("balancerd demo: two built-in backends on \(demo.addresses.map(\.description).joined(separator: " and ")).")
    print("Try it:  for i in 1 2 3 4; do curl -s http://\(host):\(first.address.port)/; done")
}
fflush(nil)   // all output streams: the demo hint must show before the first log line

let discovery: DiscoveryRunner
do {
    discovery = try DiscoveryRunner(configuration: configuration, consul: options.consulReadPolicy)
} catch {
    fail("balancerd: discovery: \(error)", code: 1)
}
if !discovery.isEmpty {
    discovery.start(publishingInto: proxy)
    if discovery.hasRoutes {
        discovery.startRoutes(publishingInto: proxy)
    }
    discovery.waitForFirstAnswers(timeout: .seconds(3))
}

var stats: StatsServer?
if let statsConfig = configuration.stats {
    do {
        let server = try StatsServer(proxy: proxy, config: statsConfig, version: version)
        stats = server
        ControlLog.line("balancerd: stats on http://\(server.address)\(statsConfig.uri) (live haproxy.cfg at /haproxy.cfg)")
    } catch {
        fail("balancerd: stats listener \(statsConfig.bind): \(error)", code: 1)
    }
}

var runtimeSocket: RuntimeSocketServer?
let handedOver = Atomic<Bool>(false)
let successor = Successor(commandLine: CommandLine.arguments,
                          socketPath: configuration.global.statsSocket.flatMap { $0.exposeFDListeners ? $0.path : nil })
/// `reload` and SIGUSR2: systemd hears that a reload runs, and that it ended if it failed
/// (if it worked, the `_softstop` below says so, with the new main pid).
@Sendable func startSuccessor(_ answer: @escaping @Sendable (Successor.Outcome) -> Void) {
    SystemdNotify.send("RELOADING=1", "STATUS=starting a new process")
    successor.start { outcome in
        ControlLog.line(outcome.message)
        if case .failed(let reason) = outcome {
            SystemdNotify.send("READY=1", "STATUS=reload failed: \(reason)")
        }
        answer(outcome)
    }
}
if let socketConfig = configuration.global.statsSocket {
    do {
        // `_softstop` from the process that took our listeners: the same graceful stop as
        // SIGTERM, started on this (main) thread through a signal to the process. Under
        // systemd that process is the service's main one from now on.
        runtimeSocket = try RuntimeSocketServer(proxy: proxy, config: socketConfig, version: version, softStop: { newOwner in
            handedOver.store(true, ordering: .releasing)
            successor.tookOver(by: newOwner)
            if let newOwner {
                SystemdNotify.send("MAINPID=\(newOwner)", "READY=1", "STATUS=handed the listeners to pid \(newOwner)")
            }
            _ = kill(getpid(), SIGUSR1)
        }, reload: { finish in
            startSuccessor { finish($0.answer) }
        })
        ControlLog.line("balancerd: runtime API on unix socket \(socketConfig.path) (level \(socketConfig.level.rawValue))\(socketConfig.exposeFDListeners ? " with expose-fd listeners" : "")")
    } catch {
        fail("balancerd: stats socket \(socketConfig.path): \(error)", code: 1)
    }
}

proxy.start()
stats?.start()
runtimeSocket?.start()

// Our loops run on the inherited sockets: now the old process may stop accepting. If this
// process had died before here, the old one would never have heard `_softstop`.
if let handover {
    if !proxy.loopsAnswer(within: .seconds(5)) {
        ControlLog.line("balancerd: warning: the event loops did not answer within 5s; telling pid \(handover.oldPID) to stop anyway")
    }
    do {
        try Handover.finish(handover)
        ControlLog.line("balancerd: handover done: pid \(handover.oldPID) stops accepting and finishes its connections")
    } catch {
        ControlLog.line("balancerd: warning: handover: \(error); pid \(handover.oldPID) still runs: stop it with SIGTERM")
    }
} else {
    // A process that took over says nothing: the old one tells systemd (MAINPID).
    notifyReady()
}

/// systemd's READY=1, at start and after each SIGHUP, with what is listening now.
func notifyReady() {
    SystemdNotify.send("READY=1", "STATUS=listening on \(proxy.boundAddresses.count) address(es)")
}

while true {
    let received = controlSignals.withUnsafeBufferPointer { waitForSignal($0, timeoutMilliseconds: 1000) }
    successor.expire(now: Posix.monotonicNanoseconds())
    switch received {
    case SIGUSR2:
        startSuccessor { _ in }
    case SIGHUP:
        SystemdNotify.send("RELOADING=1", "STATUS=re-reading the configuration")
        defer { notifyReady() }
        guard let path = options.configPath else {
            // Without a file, the certificates of --tls-cert are what a reload can change.
            if proxy.configuration.frontends.contains(where: { !$0.tls.isEmpty }) {
                for warning in proxy.reloadCertificates(proxy.configuration) {
                    ControlLog.line("balancerd: reload warning: \(warning)")
                }
                ControlLog.line("balancerd: reloaded certificates")
            } else {
                ControlLog.line("balancerd: SIGHUP ignored: no --config file to re-read")
            }
            continue
        }
        do {
            var reloaded = try HAProxyParser.load(path: path)
            if let threads = options.threads { reloaded.global.threads = threads }
            let report = try proxy.reload(reloaded)
            for warning in report.warnings { ControlLog.line("balancerd: reload warning: \(warning)") }
            ControlLog.line("balancerd: reloaded \(path) generation=\(proxy.generation): \(report.summary)")
        } catch {
            ControlLog.line("balancerd: reload failed: \(error); nothing applied, the previous configuration keeps serving")
        }
    case SIGTERM, SIGINT, SIGUSR1:
        let cause = handedOver.load(ordering: .acquiring) ? "handover" : received == SIGTERM ? "SIGTERM" : received == SIGINT ? "SIGINT" : "SIGUSR1"
        ControlLog.line("balancerd: stopping on \(cause): \(proxy.activeConnections) connection(s) open, grace \(DurationParser.format(options.grace))")
        if !handedOver.load(ordering: .acquiring) { SystemdNotify.send("STOPPING=1") }
        discovery.stop()
        stats?.stop()
        proxy.shutdown(grace: options.grace)
        // After the connections: the `reload` that started the new process hears its
        // answer on this socket, and the answer may still be on its way.
        runtimeSocket?.stop()
        demo?.stop()
        ControlLog.line("balancerd: stopped")
        exit(0)
    default:
        continue
    }
}

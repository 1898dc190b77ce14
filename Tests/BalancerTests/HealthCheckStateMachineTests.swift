// haproxy's check semantics, driven with a manual clock and no sockets.
import XCTest
@testable import Balancer

final class HealthCheckStateMachineTests: XCTestCase {
    private let ms: Int64 = 1_000_000
    private let s: Int64 = 1_000_000_000

    private func tcp(rise: Int = 2, fall: Int = 3, inter: Int64 = 2_000_000_000, fast: Int64? = nil, down: Int64? = nil,
                     connect: Int64 = 5_000_000_000, checkTimeout: Int64? = nil, slowStart: Int64? = nil) -> HealthCheckStateMachine {
        HealthCheckStateMachine(settings: .init(interval: inter, fastInterval: fast, downInterval: down, rise: rise, fall: fall,
                                                connectTimeout: connect, checkTimeout: checkTimeout, slowStart: slowStart),
                                firstCheck: 0)
    }

    private func http(_ expect: HTTPCheckExpect? = nil, inter: Int64 = 2_000_000_000, connect: Int64 = 5_000_000_000,
                      checkTimeout: Int64? = nil) -> HealthCheckStateMachine {
        HealthCheckStateMachine(settings: .init(interval: inter, rise: 2, fall: 3, connectTimeout: connect, checkTimeout: checkTimeout,
                                                http: .init(expect: expect)),
                                firstCheck: 0)
    }

    /// Runs one TCP check from the machine's deadline: connect, then `ok` or refused, 1 ms later.
    @discardableResult
    private func runTCP(_ machine: inout HealthCheckStateMachine, ok: Bool) -> HealthCheckStateMachine.Report {
        let start = machine.deadline
        XCTAssertEqual(machine.timerFired(now: start), .connect)
        let action = ok ? machine.connected(now: start + ms) : machine.connectFailed("Connection refused", now: start + ms)
        guard case .finish(let report) = action else {
            XCTFail("expected the check to finish, got \(action)")
            return .init(result: .init(status: .unknown, durationMilliseconds: 0), transition: nil, countedFailure: false)
        }
        return report
    }

    /// Runs one HTTP check that gets `status`.
    private func runHTTP(_ machine: inout HealthCheckStateMachine, status: Int, reason: String = "") -> HealthCheckStateMachine.Report? {
        let start = machine.deadline
        XCTAssertEqual(machine.timerFired(now: start), .connect)
        XCTAssertEqual(machine.connected(now: start + ms), .sendRequest)
        guard case .finish(let report) = machine.response(status: status, reason: reason, now: start + 3 * ms) else { return nil }
        return report
    }

    // MARK: hysteresis

    func testStartsUpAndFallsAtTheFirstFailureLikeHAProxy() {
        var machine = tcp(rise: 2, fall: 3)
        XCTAssertTrue(machine.isUp)
        XCTAssertEqual(machine.health, 2, "haproxy starts at health = rise: up, but will fall down at first failure")
        let report = runTCP(&machine, ok: false)
        XCTAssertEqual(report.transition, .down)
        XCTAssertTrue(report.countedFailure)
        XCTAssertEqual(machine.health, 0)
        XCTAssertFalse(machine.isUp)
    }

    func testFallFailuresInARowTakeAnUpServerDown() {
        var machine = tcp(rise: 2, fall: 3)
        runTCP(&machine, ok: true)
        XCTAssertEqual(machine.health, 4, "a success at rise jumps to rise+fall-1")
        XCTAssertNil(runTCP(&machine, ok: false).transition)
        XCTAssertEqual(machine.health, 3)
        XCTAssertNil(runTCP(&machine, ok: false).transition)
        XCTAssertEqual(machine.health, 2)
        // A success in between restores full health: the failures must be in a row.
        XCTAssertNil(runTCP(&machine, ok: true).transition)
        XCTAssertEqual(machine.health, 4)
        XCTAssertNil(runTCP(&machine, ok: false).transition)
        XCTAssertNil(runTCP(&machine, ok: false).transition)
        XCTAssertEqual(runTCP(&machine, ok: false).transition, .down)
        XCTAssertEqual(machine.health, 0)
    }

    func testRiseSuccessesInARowBringADownServerUp() {
        var machine = tcp(rise: 3, fall: 2)
        runTCP(&machine, ok: false)
        XCTAssertFalse(machine.isUp)
        XCTAssertNil(runTCP(&machine, ok: true).transition)
        XCTAssertNil(runTCP(&machine, ok: true).transition)
        XCTAssertEqual(machine.health, 2)
        // One failure while rising starts over from 0.
        let failure = runTCP(&machine, ok: false)
        XCTAssertNil(failure.transition)
        XCTAssertTrue(failure.countedFailure)
        XCTAssertEqual(machine.health, 0)
        XCTAssertFalse(runTCP(&machine, ok: false).countedFailure, "haproxy counts chkfail only while health > 0")
        runTCP(&machine, ok: true)
        runTCP(&machine, ok: true)
        XCTAssertEqual(runTCP(&machine, ok: true).transition, .up)
        XCTAssertEqual(machine.health, 4)
        XCTAssertTrue(machine.isUp)
    }

    // MARK: intervals

    func testIntervalsFollowSrvGetinter() {
        var machine = tcp(rise: 2, fall: 2, inter: 2 * s, fast: 500 * ms, down: 5 * s)
        // Health = rise (2) at start, below its top (3): fastinter.
        XCTAssertEqual(machine.nextInterval, 500 * ms)
        runTCP(&machine, ok: true)   // at top: inter, from the end of the check
        XCTAssertEqual(machine.health, 3)
        XCTAssertEqual(machine.deadline, 1 * ms + 2 * s)
        runTCP(&machine, ok: false)  // UP but failing: fastinter
        XCTAssertEqual(machine.health, 2)
        XCTAssertEqual(machine.deadline, 2 * s + 2 * ms + 500 * ms)
        runTCP(&machine, ok: false)  // DOWN with health 0: downinter
        XCTAssertFalse(machine.isUp)
        XCTAssertEqual(machine.nextInterval, 5 * s)
        runTCP(&machine, ok: true)   // DOWN but passing: fastinter
        XCTAssertEqual(machine.health, 1)
        XCTAssertEqual(machine.nextInterval, 500 * ms)
    }

    func testIntervalsDefaultToInter() {
        var machine = tcp(rise: 1, fall: 1, inter: 3 * s)
        runTCP(&machine, ok: false)
        XCTAssertEqual(machine.nextInterval, 3 * s, "downinter defaults to inter")
        let machine2 = tcp(rise: 2, fall: 2, inter: 3 * s)
        XCTAssertEqual(machine2.nextInterval, 3 * s, "fastinter defaults to inter")
    }

    func testNoCheckBeforeItsTime() {
        var machine = HealthCheckStateMachine(settings: .init(interval: s, rise: 1, fall: 1, connectTimeout: s), firstCheck: 700 * ms)
        XCTAssertEqual(machine.timerFired(now: 699 * ms), .none)
        XCTAssertEqual(machine.timerFired(now: 700 * ms), .connect)
    }

    // MARK: timeouts

    func testWithoutTimeoutCheckInterBoundsTheWholeCheck() {
        var machine = http(inter: 2 * s, connect: 10 * s)
        XCTAssertEqual(machine.timerFired(now: 0), .connect)
        XCTAssertEqual(machine.deadline, 2 * s, "inter, not timeout connect")
        XCTAssertEqual(machine.connected(now: 1500 * ms), .sendRequest)
        XCTAssertEqual(machine.deadline, 2 * s, "the reply shares the same budget")
        XCTAssertEqual(machine.timerFired(now: 2 * s - 1), .none)
        guard case .finish(let report) = machine.timerFired(now: 2 * s) else { return XCTFail() }
        XCTAssertEqual(report.result.status, .l7timeout)
        XCTAssertEqual(report.result.durationMilliseconds, 2000)
    }

    func testTimeoutCheckBoundsConnectByMinOfConnectAndInterThenAddsTheReplyTime() {
        var machine = http(inter: 2 * s, connect: 500 * ms, checkTimeout: 300 * ms)
        XCTAssertEqual(machine.timerFired(now: 0), .connect)
        XCTAssertEqual(machine.deadline, 500 * ms, "min(timeout connect, inter)")
        XCTAssertEqual(machine.connected(now: 400 * ms), .sendRequest)
        XCTAssertEqual(machine.deadline, 700 * ms, "timeout check more, once connected")

        var slowConnect = tcp(inter: 2 * s, connect: 500 * ms, checkTimeout: 300 * ms)
        XCTAssertEqual(slowConnect.timerFired(now: 0), .connect)
        guard case .finish(let report) = slowConnect.timerFired(now: 500 * ms) else { return XCTFail() }
        XCTAssertEqual(report.result.status, .l4timeout)

        var longConnect = tcp(inter: 1 * s, connect: 5 * s, checkTimeout: 300 * ms)
        XCTAssertEqual(longConnect.timerFired(now: 0), .connect)
        XCTAssertEqual(longConnect.deadline, 1 * s, "a long timeout connect does not slow checks down")
    }

    // MARK: result classes

    func testResultClasses() {
        var l4ok = tcp()
        XCTAssertEqual(runTCP(&l4ok, ok: true).result, CheckResult(status: .l4ok, durationMilliseconds: 1))

        var l4con = tcp()
        XCTAssertEqual(runTCP(&l4con, ok: false).result,
                       CheckResult(status: .l4connection, info: "Connection refused", durationMilliseconds: 1))

        var l4tout = tcp(inter: s)
        _ = l4tout.timerFired(now: 0)
        XCTAssertEqual(l4tout.timerFired(now: s), .finish(.init(result: .init(status: .l4timeout, durationMilliseconds: 1000),
                                                                 transition: .down, countedFailure: true)))

        var sockerr = http()
        _ = sockerr.timerFired(now: 0)
        _ = sockerr.connected(now: ms)
        guard case .finish(let broken) = sockerr.socketError("Connection reset by peer", now: 2 * ms) else { return XCTFail() }
        XCTAssertEqual(broken.result, CheckResult(status: .socketError, info: "Connection reset by peer", durationMilliseconds: 2))

        var l7ok = http()
        XCTAssertEqual(runHTTP(&l7ok, status: 200, reason: "OK")?.result,
                       CheckResult(status: .l7ok, code: 200, durationMilliseconds: 3))

        var l7sts = http()
        XCTAssertEqual(runHTTP(&l7sts, status: 500, reason: "Internal Server Error")?.result,
                       CheckResult(status: .l7status, code: 500, info: "Internal Server Error", durationMilliseconds: 3))

        var l7rsp = http()
        _ = l7rsp.timerFired(now: 0)
        _ = l7rsp.connected(now: ms)
        guard case .finish(let garbage) = l7rsp.invalidResponse(now: 4 * ms) else { return XCTFail() }
        XCTAssertEqual(garbage.result, CheckResult(status: .l7response, durationMilliseconds: 4))

        var l7tout = http(inter: s)
        _ = l7tout.timerFired(now: 0)
        _ = l7tout.connected(now: ms)
        guard case .finish(let silent) = l7tout.timerFired(now: s) else { return XCTFail() }
        XCTAssertEqual(silent.result.status, .l7timeout)
    }

    func testLateEventsAfterTheCheckEndedAreIgnored() {
        var machine = tcp()
        runTCP(&machine, ok: true)
        XCTAssertEqual(machine.connected(now: 5 * ms), .none)
        XCTAssertEqual(machine.connectFailed("x", now: 5 * ms), .none)
        XCTAssertEqual(machine.response(status: 200, reason: "", now: 5 * ms), .none)
    }

    // MARK: http-check expect

    func testDefaultExpectIs2xxOr3xx() {
        for (status, passes) in [(200, true), (204, true), (301, true), (399, true), (199, false), (404, false), (500, false)] {
            XCTAssertEqual(HTTPCheckExpect.passes(nil, status: status), passes, "\(status)")
        }
    }

    func testExpectStatusListsRangesAndNegation() {
        let list = HTTPCheckExpect.status([200...200, 301...303], negated: false)
        XCTAssertTrue(HTTPCheckExpect.passes(list, status: 200))
        XCTAssertTrue(HTTPCheckExpect.passes(list, status: 302))
        XCTAssertFalse(HTTPCheckExpect.passes(list, status: 204))
        let not = HTTPCheckExpect.status([500...599], negated: true)
        XCTAssertTrue(HTTPCheckExpect.passes(not, status: 404), "! status 500-599: a 404 passes")
        XCTAssertFalse(HTTPCheckExpect.passes(not, status: 503))

        var machine = http(.status([200...200], negated: false))
        XCTAssertEqual(runHTTP(&machine, status: 204, reason: "No Content")?.result.status, .l7status)
    }

    func testExpectRstatusRegex() {
        let regex = HTTPCheckExpect.statusRegex("^2[0-9][0-9]$", negated: false)
        XCTAssertTrue(HTTPCheckExpect.passes(regex, status: 204))
        XCTAssertFalse(HTTPCheckExpect.passes(regex, status: 302))
        let negated = HTTPCheckExpect.statusRegex("^5", negated: true)
        XCTAssertTrue(HTTPCheckExpect.passes(negated, status: 404))
        XCTAssertFalse(HTTPCheckExpect.passes(negated, status: 502))
        XCTAssertTrue(HTTPCheckExpect.passes(.statusRegex("0", negated: false), status: 404), "unanchored: a match anywhere")
    }

    // MARK: maintenance

    func testMaintenanceSuspendsAndResumesUpWithHealthAtRise() {
        var machine = tcp(rise: 2, fall: 3)
        runTCP(&machine, ok: false)
        XCTAssertFalse(machine.isUp)
        machine.suspend()
        XCTAssertEqual(machine.deadline, 0)
        XCTAssertEqual(machine.timerFired(now: 100 * s), .none)
        machine.resume(now: 100 * s)
        XCTAssertTrue(machine.isUp)
        XCTAssertEqual(machine.health, 2, "start OK but check immediately")
        XCTAssertEqual(machine.timerFired(now: 100 * s), .connect)
    }

    // MARK: slow start

    func testSlowStartRampsInHAProxysSteps() {
        var machine = tcp(rise: 1, fall: 1, slowStart: 20 * s)
        XCTAssertEqual(machine.rampPerMille(now: 0), 1000, "no ramp at start-up")
        runTCP(&machine, ok: false)
        XCTAssertEqual(runTCP(&machine, ok: true).transition, .up)
        let upAt = machine.rampStartedAt!
        // w = (16 × elapsed + slowstart) / slowstart of 16; per mille rounded up.
        XCTAssertEqual(machine.rampStep(now: upAt), 1)
        XCTAssertEqual(machine.rampPerMille(now: upAt), 63)
        XCTAssertEqual(machine.rampStep(now: upAt + 5 * s), 5)
        XCTAssertEqual(machine.rampPerMille(now: upAt + 5 * s), 313)
        XCTAssertEqual(machine.rampStep(now: upAt + 10 * s), 9)
        XCTAssertEqual(machine.rampStep(now: upAt + 19 * s), 16)
        XCTAssertEqual(machine.rampPerMille(now: upAt + 19 * s), 1000)
        // Steps every max(1 s, slowstart / 20): 1 s here.
        XCTAssertEqual(machine.nextRampUpdate(now: upAt + 2 * s), upAt + 3 * s)
        XCTAssertNil(machine.nextRampUpdate(now: upAt + 20 * s), "ramp over")
        XCTAssertNil(machine.rampStartedAt)

        var long = tcp(rise: 1, fall: 1, slowStart: 100 * s)
        runTCP(&long, ok: false)
        runTCP(&long, ok: true)
        XCTAssertEqual(long.nextRampUpdate(now: long.rampStartedAt!), long.rampStartedAt! + 5 * s, "slowstart / 20")
    }

    func testSlowStartWeightsMatchHAProxysEweight() {
        // haproxy: eweight = ceil(uweight × w / 16). Ours: max(1, weight × perMille / 1000).
        let health = ServerHealth()
        for weight in [1, 3, 10, 100, 256] {
            for step in 1...16 {
                let perMille = (step * 1000 + 15) / 16
                health.rampPerMille.store(perMille, ordering: .relaxed)
                let ours = health.effectiveWeight(configured: weight)
                let haproxy = (weight * step + 15) / 16
                XCTAssertLessThanOrEqual(abs(ours - haproxy), 1, "weight \(weight) step \(step)")
            }
        }
    }

    func testADownServerStopsRamping() {
        var machine = tcp(rise: 1, fall: 1, slowStart: 10 * s)
        runTCP(&machine, ok: false)
        runTCP(&machine, ok: true)
        XCTAssertNotNil(machine.rampStartedAt)
        runTCP(&machine, ok: false)
        XCTAssertNil(machine.rampStartedAt)
        XCTAssertEqual(machine.rampPerMille(now: machine.deadline), 1000)
    }

    // MARK: settings updates

    func testUpdateKeepsTheSideAndClampsHealth() {
        var machine = tcp(rise: 2, fall: 3)
        runTCP(&machine, ok: true)
        XCTAssertEqual(machine.health, 4)
        machine.update(.init(interval: s, rise: 1, fall: 1, connectTimeout: s))
        XCTAssertEqual(machine.health, 1)
        XCTAssertTrue(machine.isUp)
        XCTAssertEqual(runTCP(&machine, ok: false).transition, .down)
    }

    // MARK: log wording (captured from Debian's haproxy 2.6.12)

    func testLogLinesInHAProxysWords() {
        XCTAssertEqual(
            HealthCheckLog.transition(.down, backend: "web", server: "s1", isBackup: false,
                                      result: .init(status: .l7status, code: 500, info: "Internal Server Error", durationMilliseconds: 0),
                                      activeServers: 0, backupServers: 0, sessions: 0),
            "Server web/s1 is DOWN, reason: Layer7 wrong status, code: 500, info: \"Internal Server Error\", check duration: 0ms. 0 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.")
        XCTAssertEqual(
            HealthCheckLog.transition(.up, backend: "web", server: "s1", isBackup: false,
                                      result: .init(status: .l7ok, code: 200, durationMilliseconds: 6),
                                      activeServers: 1, backupServers: 0, sessions: 0),
            "Server web/s1 is UP, reason: Layer7 check passed, code: 200, check duration: 6ms. 1 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.")
        XCTAssertEqual(
            HealthCheckLog.transition(.down, backend: "tcp", server: "s1", isBackup: false,
                                      result: .init(status: .l4connection, info: "Connection refused", durationMilliseconds: 0),
                                      activeServers: 0, backupServers: 0, sessions: 0),
            "Server tcp/s1 is DOWN, reason: Layer4 connection problem, info: \"Connection refused\", check duration: 0ms. 0 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.")
        XCTAssertEqual(
            HealthCheckLog.transition(.down, backend: "silent", server: "s1", isBackup: false,
                                      result: .init(status: .l7timeout, durationMilliseconds: 902),
                                      activeServers: 0, backupServers: 0, sessions: 0),
            "Server silent/s1 is DOWN, reason: Layer7 timeout, check duration: 902ms. 0 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.")
        XCTAssertEqual(
            HealthCheckLog.transition(.down, backend: "garbage", server: "s1", isBackup: false,
                                      result: .init(status: .l7response, durationMilliseconds: 0),
                                      activeServers: 0, backupServers: 0, sessions: 0),
            "Server garbage/s1 is DOWN, reason: Layer7 invalid response, check duration: 0ms. 0 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.")
        // A backup server, and a backend left on its backups.
        XCTAssertEqual(
            HealthCheckLog.transition(.down, backend: "web", server: "s2", isBackup: false,
                                      result: .init(status: .l4timeout, durationMilliseconds: 2001),
                                      activeServers: 0, backupServers: 1, sessions: 3),
            "Server web/s2 is DOWN, reason: Layer4 timeout, check duration: 2001ms. 0 active and 1 backup servers left. Running on backup. 3 sessions active, 0 requeued, 0 remaining in queue.")
        XCTAssertTrue(HealthCheckLog.transition(.up, backend: "web", server: "b1", isBackup: true,
                                                result: .init(status: .l4ok, durationMilliseconds: 0),
                                                activeServers: 1, backupServers: 1, sessions: 0)
            .hasPrefix("Backup Server web/b1 is UP, reason: Layer4 check passed, check duration: 0ms."))
        XCTAssertEqual(HealthCheckLog.noServerAvailable(backend: "web"), "backend web has no server available!")
        XCTAssertEqual(HealthCheckLog.asciiEncoded("a\"b<c>\u{7}é"), "a<22>b<3C>c<3E><07><C3><A9>")
    }

    // MARK: the request a check sends

    func testHTTPCheckRequestBytes() {
        let server = ServerConfig(name: "s1", address: HostPort(host: "10.0.0.1", port: 8080))
        let plain = HealthCheck.request(HTTPCheck(), server: server)
        XCTAssertEqual(String(decoding: plain, as: UTF8.self), "OPTIONS / HTTP/1.0\r\nConnection: close\r\n\r\n", "Host only if given")
        let full = HealthCheck.request(HTTPCheck(method: "POST", uri: "/health", version: "HTTP/1.1",
                                                 headers: [HTTPCheckHeader(name: "Host", value: "localhost")], body: "ping"),
                                       server: server)
        XCTAssertEqual(String(decoding: full, as: UTF8.self),
                       "POST /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 4\r\n\r\nping")
        let fromFlags = HealthCheck.request(HTTPCheck(method: "GET", uri: "/", version: "HTTP/1.1", hostFromServerAddress: true),
                                            server: server)
        XCTAssertEqual(String(decoding: fromFlags, as: UTF8.self), "GET / HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nConnection: close\r\n\r\n")
    }
}

// MARK: TLS checks (`ssl`, `check-ssl`)

extension HealthCheckStateMachineTests {
    private func tlsMachine(http: Bool, inter: Int64 = 2_000_000_000, connect: Int64 = 5_000_000_000,
                            checkTimeout: Int64? = nil) -> HealthCheckStateMachine {
        HealthCheckStateMachine(settings: .init(interval: inter, rise: 2, fall: 3, connectTimeout: connect, checkTimeout: checkTimeout,
                                                http: http ? .init(expect: nil) : nil, tls: true),
                                firstCheck: 0)
    }

    /// A TCP check on an `ssl` server passes when the handshake completes: haproxy's L6OK
    /// ("Layer6 check passed"), not L4OK, and no info.
    func testTLSCheckPassesAtLayer6WhenTheHandshakeCompletes() {
        var machine = tlsMachine(http: false)
        XCTAssertEqual(machine.timerFired(now: 0), .connect)
        XCTAssertEqual(machine.connected(now: 2 * ms), .startHandshake)
        XCTAssertEqual(machine.phase, .handshaking)
        guard case .finish(let report) = machine.handshakeCompleted(now: 5 * ms) else { return XCTFail() }
        XCTAssertEqual(report.result, CheckResult(status: .l6ok, durationMilliseconds: 5))
        XCTAssertTrue(report.result.passed)
        XCTAssertNil(report.transition)
        XCTAssertEqual(machine.health, 4, "a pass at rise jumps to rise+fall-1, as for L4OK")
        XCTAssertEqual(machine.phase, .idle)
        XCTAssertEqual(machine.deadline, 5 * ms + 2 * s)
    }

    /// A failed handshake is L6RSP with haproxy's conn_err_code_str() words, and counts as
    /// a failure like any other.
    func testFailedHandshakeIsLayer6InvalidResponse() {
        var failed = tlsMachine(http: true)
        _ = failed.timerFired(now: 0)
        _ = failed.connected(now: ms)
        guard case .finish(let report) = failed.handshakeFailed(.failed, now: 3 * ms) else { return XCTFail() }
        XCTAssertEqual(report.result, CheckResult(status: .l6response, info: "SSL handshake failure", durationMilliseconds: 3))
        XCTAssertEqual(report.transition, .down, "a new server is UP but falls at its first failure")
        XCTAssertTrue(report.countedFailure)

        var mismatch = tlsMachine(http: false)
        _ = mismatch.timerFired(now: 0)
        _ = mismatch.connected(now: ms)
        guard case .finish(let wrongName) = mismatch.handshakeFailed(.nameMismatch, now: 2 * ms) else { return XCTFail() }
        XCTAssertEqual(wrongName.result, CheckResult(status: .l6response,
                                                     info: "Server presented an SSL certificate different from the expected one",
                                                     durationMilliseconds: 2))
    }

    /// The handshake is part of the connect: it runs under the connect's deadline
    /// (min(`timeout connect`, `inter`) with `timeout check`, else `inter`), and running out
    /// of it is L6TOUT ("Layer6 timeout"), not L4TOUT.
    func testHandshakeSharesTheConnectDeadlineAndTimesOutAtLayer6() {
        var bounded = tlsMachine(http: false, inter: 2 * s, connect: 500 * ms, checkTimeout: 300 * ms)
        XCTAssertEqual(bounded.timerFired(now: 0), .connect)
        XCTAssertEqual(bounded.connected(now: 100 * ms), .startHandshake)
        XCTAssertEqual(bounded.deadline, 500 * ms, "connected, but not through TLS yet: still the connect's deadline")
        XCTAssertEqual(bounded.timerFired(now: 499 * ms), .none)
        guard case .finish(let report) = bounded.timerFired(now: 500 * ms) else { return XCTFail() }
        XCTAssertEqual(report.result, CheckResult(status: .l6timeout, durationMilliseconds: 500))

        var unbounded = tlsMachine(http: true, inter: 300 * ms)
        _ = unbounded.timerFired(now: 0)
        _ = unbounded.connected(now: ms)
        XCTAssertEqual(unbounded.deadline, 300 * ms, "without timeout check, inter bounds the whole check")
        guard case .finish(let late) = unbounded.timerFired(now: 300 * ms) else { return XCTFail() }
        XCTAssertEqual(late.result.status, .l6timeout)
    }

    /// An HTTP check on an `ssl` server sends its request once the handshake is done; only
    /// then does `timeout check` start; the reply decides at layer 7 as in plain text.
    func testTLSHTTPCheckSendsAfterTheHandshake() {
        var machine = tlsMachine(http: true, inter: 2 * s, connect: 1 * s, checkTimeout: 300 * ms)
        _ = machine.timerFired(now: 0)
        XCTAssertEqual(machine.connected(now: 10 * ms), .startHandshake)
        XCTAssertEqual(machine.response(status: 200, reason: "OK", now: 20 * ms), .none, "no reply before the handshake")
        XCTAssertEqual(machine.handshakeCompleted(now: 50 * ms), .sendRequest)
        XCTAssertEqual(machine.phase, .awaitingReply)
        XCTAssertEqual(machine.deadline, 350 * ms, "timeout check counts from the end of the handshake")
        guard case .finish(let report) = machine.response(status: 200, reason: "OK", now: 60 * ms) else { return XCTFail() }
        XCTAssertEqual(report.result, CheckResult(status: .l7ok, code: 200, durationMilliseconds: 60))

        var silent = tlsMachine(http: true, inter: 2 * s, connect: 1 * s, checkTimeout: 300 * ms)
        _ = silent.timerFired(now: 0)
        _ = silent.connected(now: 10 * ms)
        _ = silent.handshakeCompleted(now: 50 * ms)
        guard case .finish(let timedOut) = silent.timerFired(now: 350 * ms) else { return XCTFail() }
        XCTAssertEqual(timedOut.result.status, .l7timeout, "through TLS, a silent server is a layer-7 timeout")

        var broken = tlsMachine(http: true)
        _ = broken.timerFired(now: 0)
        _ = broken.connected(now: ms)
        guard case .finish(let reset) = broken.socketError("Connection reset by peer", now: 2 * ms) else { return XCTFail() }
        XCTAssertEqual(reset.result.status, .socketError)
    }

    /// Plain checks never ask for a handshake, and handshake events outside one are stale.
    func testHandshakeEventsOutsideAHandshakeAreIgnored() {
        var plain = http()
        _ = plain.timerFired(now: 0)
        XCTAssertEqual(plain.handshakeCompleted(now: ms), .none)
        XCTAssertEqual(plain.connected(now: ms), .sendRequest, "a plain check goes straight to its request")
        XCTAssertEqual(plain.handshakeFailed(.failed, now: 2 * ms), .none)

        var machine = tlsMachine(http: false)
        _ = machine.timerFired(now: 0)
        _ = machine.connected(now: ms)
        _ = machine.handshakeCompleted(now: 2 * ms)
        XCTAssertEqual(machine.handshakeCompleted(now: 3 * ms), .none)
        XCTAssertEqual(machine.handshakeFailed(.failed, now: 3 * ms), .none)
        XCTAssertEqual(machine.health, 4)
    }

    /// The statuses in haproxy's words and numbers (check_statuses[], enum healthcheck_status),
    /// and the lines Debian's haproxy 2.6.12 printed for TLS checks.
    func testLayer6StatusesAndLogLines() {
        XCTAssertEqual([CheckStatus.l6ok, .l6timeout, .l6response].map(\.text), ["L6OK", "L6TOUT", "L6RSP"])
        XCTAssertEqual([CheckStatus.l6ok, .l6timeout, .l6response].map(\.description),
                       ["Layer6 check passed", "Layer6 timeout", "Layer6 invalid response"])
        XCTAssertEqual([CheckStatus.l6ok, .l6timeout, .l6response].map(\.haproxyCode), [9, 10, 11])
        XCTAssertEqual(
            HealthCheckLog.transition(.down, backend: "web", server: "plain", isBackup: false,
                                      result: .init(status: .l6response, info: "SSL handshake failure", durationMilliseconds: 32),
                                      activeServers: 7, backupServers: 0, sessions: 0),
            "Server web/plain is DOWN, reason: Layer6 invalid response, info: \"SSL handshake failure\", check duration: 32ms. 7 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.")
        XCTAssertEqual(
            HealthCheckLog.transition(.down, backend: "tcpchk", server: "silent", isBackup: false,
                                      result: .init(status: .l6timeout, durationMilliseconds: 302),
                                      activeServers: 0, backupServers: 0, sessions: 0),
            "Server tcpchk/silent is DOWN, reason: Layer6 timeout, check duration: 302ms. 0 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.")
        XCTAssertTrue(HealthCheckLog.transition(.up, backend: "web", server: "s1", isBackup: false,
                                                result: .init(status: .l6ok, durationMilliseconds: 4),
                                                activeServers: 1, backupServers: 0, sessions: 0)
            .hasPrefix("Server web/s1 is UP, reason: Layer6 check passed, check duration: 4ms. "))
    }

    /// Settings from the configuration: `tls` comes from the server's check TLS.
    func testSettingsFromTheModelCarryTLS() {
        let backend = BackendConfig(name: "b", mode: .http)
        XCTAssertFalse(HealthCheckStateMachine.Settings(check: HealthCheckConfig(), backend: backend, slowStart: nil).tls)
        XCTAssertTrue(HealthCheckStateMachine.Settings(check: HealthCheckConfig(), backend: backend, slowStart: nil, tls: true).tls)
    }
}

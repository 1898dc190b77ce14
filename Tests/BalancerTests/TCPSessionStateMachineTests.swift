import XCTest
@testable import Balancer

final class TCPSessionStateMachineTests: XCTestCase {
    func testRefusedConnectsAreRedispatchedUntilRetriesRunOut() {
        var machine = TCPSessionStateMachine(retries: 3, redispatch: true)
        XCTAssertEqual(machine.start(), .connect(avoiding: nil))
        for attempt in 0..<3 {
            machine.connecting(to: attempt)
            XCTAssertEqual(machine.connectFailed(timedOut: false), .connect(avoiding: attempt))
        }
        machine.connecting(to: 3)
        XCTAssertEqual(machine.connectFailed(timedOut: false), .close(TerminationState.make("S", "C")))
        XCTAssertEqual(machine.state, .closed(.make("S", "C")))
    }

    func testWithoutRedispatchRetriesTheSameServer() {
        var machine = TCPSessionStateMachine(retries: 1, redispatch: false)
        _ = machine.start()
        machine.connecting(to: 4)
        XCTAssertEqual(machine.connectFailed(timedOut: true), .reconnectSame(server: 4))
        machine.connecting(to: 4)
        XCTAssertEqual(machine.connectFailed(timedOut: true), .close(.make("s", "C")))
    }

    func testHalfCloseThenNormalClose() {
        var machine = TCPSessionStateMachine(retries: 3, redispatch: true)
        _ = machine.start()
        machine.connecting(to: 0)
        XCTAssertEqual(machine.connected(), .startRelaying)
        XCTAssertEqual(machine.sourceFinished(.client), .shutdownWrite(.server))
        XCTAssertEqual(machine.state, .established(server: 0))
        XCTAssertEqual(machine.sourceFinished(.server), .close(.normal))
        XCTAssertEqual(machine.state, .closed(.normal))
    }

    func testFailuresAndTimeoutsNameTheSideAndPhase() {
        var a = TCPSessionStateMachine(retries: 3, redispatch: true)
        _ = a.start(); a.connecting(to: 0); _ = a.connected()
        XCTAssertEqual(a.ioFailed(.client), .abort(.make("C", "D")))
        XCTAssertEqual(a.ioFailed(.server), .none, "a closed session ignores later events")

        var b = TCPSessionStateMachine(retries: 3, redispatch: true)
        _ = b.start(); b.connecting(to: 0); _ = b.connected()
        XCTAssertEqual(b.timedOut(.server), .abort(.make("s", "D")))

        var c = TCPSessionStateMachine(retries: 0, redispatch: true)
        _ = c.start(); c.connecting(to: 0)
        XCTAssertEqual(c.timedOut(.server), .close(.make("s", "C")))

        var d = TCPSessionStateMachine(retries: 3, redispatch: true)
        _ = d.start()
        XCTAssertEqual(d.noServer(), .close(.make("S", "C")))

        var e = TCPSessionStateMachine(retries: 3, redispatch: true)
        _ = e.start(); e.connecting(to: 0); _ = e.connected()
        XCTAssertEqual(e.killed(), .abort(.make("K", "D")))
        XCTAssertEqual(TerminationState.make("K", "D").description, "KD")
    }
}

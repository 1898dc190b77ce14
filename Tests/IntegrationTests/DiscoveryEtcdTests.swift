// The real balancerd following a real etcd (Debian's etcd-server, one member on loopback
// with a temporary data directory), with registrator's layout: `PREFIX<ID>` = host:port.
// Keys are changed through etcd's JSON gateway and the tests assert what a client gets
// through balancerd: which stamp servers answer, and how soon after the change.
// Helpers (clientRequest, waitUntilServed, …) are in DiscoveryConsulTests.swift.

import Foundation
import Glibc
import TestSupport
import XCTest

final class DiscoveryEtcdTests: XCTestCase {
    static let prefix = "/services/web/"

    func startEtcd() throws -> EtcdServer {
        let etcd = try EtcdServer()
        addTeardownBlock {
            etcd.stop()
            etcd.directory.remove()
        }
        return etcd
    }

    func startEtcdBalancer(_ etcd: EtcdServer) throws -> (BalancerdProcess, UInt16) {
        try startBalancer(["--listen", "127.0.0.1:0", "--mode", "http", "--threads", "2",
                           "--etcd", etcd.url, "--etcd-prefix", Self.prefix])
    }

    /// Stamp servers named `names`, each put under the prefix with its name as the ID.
    func startPut(_ names: [String], in etcd: EtcdServer) throws -> [String: HTTPStampServer] {
        var servers: [String: HTTPStampServer] = [:]
        for name in names {
            let server = try startHTTPStampServer(name)
            try etcd.put(Self.prefix + name, server.address)
            servers[name] = server
        }
        return servers
    }

    // MARK: 10. put, delete, lease expiry

    func testPutIsServedAndDeleteRemoves() throws {
        let etcd = try startEtcd()
        _ = try startPut(["e1"], in: etcd)
        let (balancer, port) = try startEtcdBalancer(etcd)
        try waitForFirstTable(balancer, servers: ["e1"], port: port)
        XCTAssertTrue(updateLines(balancer).last?.contains("updated from etcd ") == true, tail(balancer))

        let e2 = try startHTTPStampServer("e2")
        try etcd.put(Self.prefix + "e2", e2.address)
        let added = try XCTUnwrap(waitUntilServed("e2", port: port, timeout: 5), "e2 not served after its put\n\(tail(balancer))")
        print("etcd: put e2 → first response from e2 after \(milliseconds(added)) ms")
        XCTAssertLessThan(added, 1.0, "a watch should see a put at once")
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["e1", "e2"])

        try etcd.delete(Self.prefix + "e1")
        let removed = try XCTUnwrap(waitUntilNotServed("e1", port: port, timeout: 5), "e1 still served after its delete\n\(tail(balancer))")
        print("etcd: delete e1 → e1 no longer served after \(milliseconds(removed)) ms")
        XCTAssertNotNil(waitForUpdate(balancer, servers: ["e2"], timeout: 1), tail(balancer))
        XCTAssertEqual(try servedNames(port: port, count: 4, balancer: balancer), ["e2", "e2", "e2", "e2"])

        try etcd.delete(Self.prefix + "e2")
        XCTAssertNotNil(waitForUpdate(balancer, servers: [], timeout: 5), tail(balancer))
        XCTAssertEqual(try clientRequest(port: port).status, 503, tail(balancer))
    }

    func testExpiredLeaseRemovesServer() throws {
        let etcd = try startEtcd()
        _ = try startPut(["e1"], in: etcd)
        let (balancer, port) = try startEtcdBalancer(etcd)
        try waitForFirstTable(balancer, servers: ["e1"], port: port)

        let e2 = try startHTTPStampServer("e2")
        let lease = try etcd.grantLease(ttl: 2)
        try etcd.put(Self.prefix + "e2", e2.address, lease: lease)
        let putAt = monotonicSeconds()
        XCTAssertNotNil(waitUntilServed("e2", port: port, timeout: 3), "e2 not served after its put\n\(tail(balancer))")
        // Nobody keeps the lease alive: etcd deletes the key after about 2 s.
        XCTAssertNotNil(waitUntilNotServed("e2", port: port, timeout: 7), "e2 still served 7 s after its 2 s lease\n\(tail(balancer))")
        let gone = monotonicSeconds() - putAt
        print("etcd: put e2 with a 2 s lease → e2 no longer served after \(milliseconds(gone)) ms")
        XCTAssertGreaterThan(gone, 1.5, "removed before its lease could expire?")
        XCTAssertEqual(try servedNames(port: port, count: 4, balancer: balancer), ["e1", "e1", "e1", "e1"])
    }

    // MARK: 11. the prefix boundary

    /// `/services/web2/x` starts with `/services/web` but is not under `/services/web/`, and
    /// the key equal to the prefix has no ID: neither is ever served, whether it was there
    /// at the start (the list) or put later (the watch).
    func testKeysOutsideThePrefixAreNeverServed() throws {
        let etcd = try startEtcd()
        let outside = try ["out1", "out2", "out3", "out4"].map { try startHTTPStampServer($0) }
        try etcd.put("/services/web2/x", outside[0].address)
        try etcd.put(Self.prefix, outside[1].address)
        _ = try startPut(["in1"], in: etcd)
        let (balancer, port) = try startEtcdBalancer(etcd)
        try waitForFirstTable(balancer, servers: ["in1"], port: port)

        try etcd.put("/services/web2/y", outside[2].address)
        try etcd.put("/services/web", outside[3].address)
        try etcd.put(Self.prefix, outside[3].address)
        _ = try startPut(["in2"], in: etcd)   // after the outside puts: the watch saw them first
        XCTAssertNotNil(waitUntilServed("in2", port: port, timeout: 5), "in2 not served\n\(tail(balancer))")
        let names = try servedNames(port: port, count: 10, balancer: balancer)
        assertRotation(names, of: ["in1", "in2"])
        for line in updateLines(balancer) {
            for server in outside {
                XCTAssertFalse(line.contains(":\(server.port)/"), "\(server.name), outside the prefix, is in the table: \(line)")
            }
        }
        XCTAssertEqual(outside.map(\.requestCount), [0, 0, 0, 0], "a server outside the prefix got requests")
    }

    // MARK: 12. compaction

    func testCompactionWhileWatchingKeepsInSync() throws {
        let etcd = try startEtcd()
        _ = try startPut(["e1"], in: etcd)
        let (balancer, port) = try startEtcdBalancer(etcd)
        try waitForFirstTable(balancer, servers: ["e1"], port: port)

        _ = try startPut(["e2"], in: etcd)
        XCTAssertNotNil(waitUntilServed("e2", port: port, timeout: 5), tail(balancer))
        try etcd.put("/other/noise", "x")   // a revision balancerd's watch does not see
        let revision = try etcd.currentRevision()
        try etcd.compact(revision: revision)

        _ = try startPut(["e3"], in: etcd)
        let latency = try XCTUnwrap(waitUntilServed("e3", port: port, timeout: 5), "e3 not served after the compaction\n\(tail(balancer))")
        print("etcd: compact to \(revision), put e3 → served after \(milliseconds(latency)) ms")
        try etcd.delete(Self.prefix + "e1")
        XCTAssertNotNil(waitUntilNotServed("e1", port: port, timeout: 5), "e1 still served after its delete\n\(tail(balancer))")
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["e2", "e3"])
    }

    // MARK: 13. etcd down and back

    func testEtcdStoppedKeepsLastGoodTableAndRestartIsFollowed() throws {
        let etcd = try startEtcd()
        _ = try startPut(["e1", "e2"], in: etcd)
        let (balancer, port) = try startEtcdBalancer(etcd)
        try waitForFirstTable(balancer, servers: ["e1", "e2"], port: port)
        let updatesBefore = updateLines(balancer).count
        let linesBefore = balancer.lineCount

        etcd.stop()
        XCTAssertNotNil(balancer.waitForLine(after: linesBefore, timeout: 3) { $0.hasPrefix("balancerd: etcd: ") && $0.contains("keeping the last good table") },
                        "no 'keeping the last good table' line with etcd stopped\n\(tail(balancer))")
        let traffic = runTraffic(port: port, until: monotonicSeconds() + 1.5)
        print("etcd stopped: \(traffic.total) requests, \(traffic.failures.count) failed")
        XCTAssertGreaterThan(traffic.total, 20)
        XCTAssertEqual(traffic.failures, [], "requests failed with etcd stopped\n\(tail(balancer))")
        XCTAssertEqual(Set(traffic.bodies.keys), ["e1", "e2"], "with etcd stopped: \(traffic.bodies)")
        XCTAssertEqual(updateLines(balancer).count, updatesBefore, "the table changed with etcd stopped\n\(tail(balancer))")

        try etcd.start()
        let e3 = try startHTTPStampServer("e3")
        try etcd.put(Self.prefix + "e3", e3.address)
        let latency = try XCTUnwrap(waitUntilServed("e3", port: port, timeout: 10),
                                    "a put after etcd's restart was not followed\n\(tail(balancer))\n\(etcd.outputTail(10))")
        print("etcd restarted: put e3 → served after \(milliseconds(latency)) ms")
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["e1", "e2", "e3"])
    }
}

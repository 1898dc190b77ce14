// HTTP mode, message framing both ways (RFC 9112): large bodies by Content-Length and
// chunked (with trailers), bodiless responses, 100-continue, close-delimited bodies and the
// Upgrade tunnel. Each test also checks that the connection is still usable afterwards,
// since a framing mistake usually shows as the *next* response going wrong.

import Foundation
import Glibc
import TestSupport
import XCTest

final class HTTPFramingTests: XCTestCase {
    /// 1 MiB of random bytes with Content-Length, echoed back by the server intact.
    func testOneMiBContentLengthBodyEchoedIntact() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        let payload = randomBytes(count: 1 << 20)
        try connection.send(Array("POST /echo HTTP/1.1\r\nHost: test.local\r\nContent-Length: \(payload.count)\r\n\r\n".utf8) + payload)
        let response: HTTPResponse
        do {
            response = try connection.readResponse(timeout: 10)
        } catch {
            return XCTFail("\(error)\n\(tail(balancer))")
        }
        XCTAssertEqual(response.status, 200, "\(response)")
        XCTAssertEqual(servers[0].completeRequests.last?.body.count, payload.count, "the server got a different body length")
        XCTAssertEqual(response.body.count, payload.count)
        XCTAssertTrue(response.body == payload, "echoed body differs from the sent body")

        try connection.send(getRequest("/after"))
        XCTAssertEqual(try connection.readResponse().header("X-Path"), "/after")
    }

    /// 1 MiB sent chunked (uneven chunk sizes, chunk extensions, a trailer): the server
    /// decodes the same bytes and the trailer, and its chunked echo (with trailers) arrives
    /// intact.
    func testOneMiBChunkedBodyAndTrailersBothWays() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        let payload = randomBytes(count: 1 << 20)
        var request = Array("POST /echo-chunked HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
        var offset = 0
        var size = 7
        while offset < payload.count {
            let end = min(offset + size, payload.count)
            request += Array("\(String(end - offset, radix: 16));ext=\(size % 3)\r\n".utf8) + payload[offset..<end] + [13, 10]
            offset = end
            size = size * 3 % 65521 + 1
        }
        request += Array("0\r\nX-Request-Trailer: tv\r\n\r\n".utf8)
        try connection.send(request)

        let response: HTTPResponse
        do {
            response = try connection.readResponse(timeout: 10)
        } catch {
            return XCTFail("\(error)\n\(tail(balancer))")
        }
        XCTAssertEqual(response.status, 200, "\(response)")
        let received = try XCTUnwrap(servers[0].completeRequests.last, "the server did not get the whole chunked request")
        XCTAssertTrue(received.body == payload, "server decoded \(received.body.count) bytes, not the 1 MiB sent")
        XCTAssertEqual(received.trailers.map { "\($0.name.lowercased())=\($0.value)" }, ["x-request-trailer=tv"], "request trailer not forwarded")

        XCTAssertTrue(response.isChunked, "a chunked response must stay chunked: \(response)")
        XCTAssertTrue(response.body == payload, "echoed body differs (\(response.body.count) bytes)")
        XCTAssertEqual(response.trailer("X-Body-Length"), "\(payload.count)", "response trailers: \(response.trailers)")
        XCTAssertEqual(response.trailer("X-Request-Trailers"), "x-request-trailer=tv")

        try connection.send(getRequest("/after"))
        XCTAssertEqual(try connection.readResponse().header("X-Path"), "/after")
    }

    /// A 1 MiB chunked response to a GET arrives intact, with its checksum trailer.
    func testOneMiBChunkedResponseIntact() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        try connection.send(getRequest("/bytes/\(1 << 20)"))
        let response: HTTPResponse
        do {
            response = try connection.readResponse(timeout: 10)
        } catch {
            return XCTFail("\(error)\n\(tail(balancer))")
        }
        let expected = HTTPTestServer.pattern(count: 1 << 20)
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.body.count, expected.count)
        XCTAssertTrue(response.body == expected, "chunked response body corrupted")
        let checksum = expected.reduce(UInt32(0)) { ($0 &* 33) ^ UInt32($1) }
        XCTAssertEqual(response.trailer("X-Checksum"), "\(checksum)", "trailers: \(response.trailers)")

        try connection.send(getRequest("/after"))
        XCTAssertEqual(try connection.readResponse().header("X-Path"), "/after")
    }

    /// HEAD (Content-Length but no body), 204 and 304 (with Content-Length: 5) carry no body:
    /// the next response on the same connection is read correctly, each time.
    func testBodilessResponsesKeepTheConnectionUsable() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        let cases: [(request: String, method: String, status: Int)] = [
            ("HEAD /thing HTTP/1.1\r\nHost: test.local\r\n\r\n", "HEAD", 200),
            (getRequest("/status/204"), "GET", 204),
            (getRequest("/status/304", extra: "If-None-Match: \"v1\"\r\n"), "GET", 304),
        ]
        for (request, method, status) in cases {
            try connection.send(request)
            do {
                let response = try connection.readResponse(method: method)
                XCTAssertEqual(response.status, status, "\(response)")
                XCTAssertEqual(response.body, [], "\(method) \(status) had a body")
                if method == "HEAD" {
                    XCTAssertEqual(response.header("Content-Length"), "2", "HEAD must keep the GET's Content-Length: \(response)")
                }
                // Nothing may follow the bodiless response before the next one is asked for.
                XCTAssertFalse(connection.isReadable, "bytes after a bodiless \(status): \(connection.readRaw(timeout: 0.1).count) bytes")
                try connection.send(getRequest("/next"))
                let next = try connection.readResponse()
                XCTAssertEqual(next.status, 200, "after \(method) \(status): \(next)")
                XCTAssertEqual(next.header("X-Path"), "/next", "after \(method) \(status): \(next)")
                XCTAssertEqual(next.bodyText, "s1")
            } catch {
                return XCTFail("\(method) → \(status): \(error)\n\(tail(balancer))")
            }
        }
    }

    /// `Expect: 100-continue`: the client waits for `100 Continue` before sending the body,
    /// then gets the final response.
    func testExpectContinueRelaysInterimResponse() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        try connection.send("POST /echo HTTP/1.1\r\nHost: test.local\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        let interim: HTTPResponse
        do {
            interim = try connection.readResponse(timeout: 5)
        } catch {
            return XCTFail("no 100 Continue before the body was sent: \(error)\n\(tail(balancer))")
        }
        XCTAssertEqual(interim.status, 100, "\(interim)")
        try connection.send("hello world")
        let (final, _) = try connection.readFinalResponse(timeout: 5)
        XCTAssertEqual(final.status, 200, "\(final)")
        XCTAssertEqual(final.bodyText, "hello world")
        XCTAssertEqual(servers[0].completeRequests.count, 1)

        try connection.send(getRequest("/after"))
        XCTAssertEqual(try connection.readResponse().header("X-Path"), "/after")
    }

    /// A response with neither Content-Length nor chunked ends at the server's close: the
    /// client gets the whole body and then the close.
    func testCloseDelimitedResponseEndsWithClose() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        try connection.send(getRequest("/close-delimited"))
        let response: HTTPResponse
        do {
            response = try connection.readResponse(timeout: 5)
        } catch {
            return XCTFail("\(error)\n\(tail(balancer))")
        }
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.bodyText, "s1 until close")
        XCTAssertTrue(response.isCloseDelimited || connection.waitForClose(timeout: 2), "client connection not closed after a close-delimited body")
    }

    /// `Connection: Upgrade` + `Upgrade: websocket` answered 101: from then on the connection
    /// is a byte tunnel both ways (the server echoes), for text and for binary bytes.
    func testUpgradeBecomesTunnel() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        try connection.send(getRequest("/upgrade", extra: "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"))
        let response: HTTPResponse
        do {
            response = try connection.readResponse(timeout: 5)
        } catch {
            return XCTFail("\(error)\n\(tail(balancer))")
        }
        XCTAssertEqual(response.status, 101, "\(response)\nserver saw: \(servers[0].receivedHeads.map(show))")
        guard response.status == 101 else { return }
        XCTAssertEqual(response.header("Upgrade")?.lowercased(), "websocket", "\(response)")

        for message in [Array("ping".utf8), [0, 255, 13, 10, 13, 10, 1, 2], randomBytes(count: 65_536)] {
            try connection.send(message)
            let echoed: [UInt8]
            do {
                echoed = try connection.readRaw(exactly: message.count, timeout: 5)
            } catch {
                return XCTFail("tunnel did not echo \(message.count) bytes: \(error)\n\(tail(balancer))")
            }
            XCTAssertTrue(echoed == message, "tunnel corrupted \(message.count) bytes")
        }
        // The client ends the tunnel; the server side sees EOF and closes, so does the client side.
        connection.shutdownWrite()
        XCTAssertTrue(connection.waitForClose(timeout: 3), "tunnel not closed after the client's half-close")
    }

    /// An upgrade the server declines (it answers 200): the connection stays plain HTTP and
    /// the next request on it is answered normally.
    func testDeclinedUpgradeStaysHTTP() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)
        try connection.send(getRequest("/no-upgrade", extra: "Connection: Upgrade\r\nUpgrade: websocket\r\n"))
        do {
            let response = try connection.readResponse()
            XCTAssertEqual(response.status, 200, "\(response)")
            try connection.send(getRequest("/after"))
            let next = try connection.readResponse()
            XCTAssertEqual(next.header("X-Path"), "/after", "\(next)")
        } catch {
            XCTFail("\(error)\n\(tail(balancer))")
        }
    }
}

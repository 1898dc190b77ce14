import XCTest
@testable import Balancer

final class HTTPExchangePolicyTests: XCTestCase {
    private func request(_ method: HTTPMethod, replayable: Bool = true, upgrade: Bool = false) -> HTTPExchangePolicy.Request {
        var r = HTTPExchangePolicy.Request()
        r.method = method
        r.replayable = replayable
        r.upgrade = upgrade
        return r
    }

    /// A connect that failed sent nothing: any method may try again (RetryPolicy, shared
    /// with TCP mode), until the retries are spent.
    func testConnectFailuresRetryAnyMethodUntilRetriesAreSpent() {
        XCTAssertNotEqual(RetryPolicy(retries: 3, redispatch: true).afterFailure(attempt: 1, server: 0), .giveUp)
        XCTAssertNotEqual(RetryPolicy(retries: 3, redispatch: true).afterFailure(attempt: 3, server: 0), .giveUp)
        XCTAssertEqual(RetryPolicy(retries: 3, redispatch: true).afterFailure(attempt: 4, server: 0), .giveUp)
        XCTAssertEqual(RetryPolicy(retries: 0, redispatch: true).afterFailure(attempt: 1, server: 0), .giveUp)
    }

    func testOnlyIdempotentReplayableRequestsAreResent() {
        for method in [HTTPMethod.get, .head, .options, .put, .delete] {
            XCTAssertTrue(HTTPExchangePolicy.mayResend(request(method), attempts: 1, retries: 3, reusedConnection: false), "\(method)")
        }
        for method in [HTTPMethod.post, .patch] {
            XCTAssertFalse(HTTPExchangePolicy.mayResend(request(method), attempts: 1, retries: 3, reusedConnection: true), "\(method)")
        }
        // A body too large to keep cannot be replayed, whatever the method.
        XCTAssertFalse(HTTPExchangePolicy.mayResend(request(.put, replayable: false), attempts: 1, retries: 3, reusedConnection: true))
        // An upgrade is a tunnel in the making: never replayed.
        XCTAssertFalse(HTTPExchangePolicy.mayResend(request(.get, upgrade: true), attempts: 1, retries: 3, reusedConnection: true))
        XCTAssertFalse(HTTPExchangePolicy.mayResend(request(.get), attempts: 4, retries: 3, reusedConnection: false))
        // The keep-alive race on a reused connection is not the server's fault: one more try.
        XCTAssertTrue(HTTPExchangePolicy.mayResend(request(.get), attempts: 4, retries: 3, reusedConnection: true))
    }

    func testKeepAliveToClient() {
        var keep = HTTPExchangePolicy.Request()
        keep.keepAlive = true
        XCTAssertTrue(HTTPExchangePolicy.keepAliveToClient(request: keep, responseFraming: .contentLength(3), stopping: false))
        XCTAssertTrue(HTTPExchangePolicy.keepAliveToClient(request: keep, responseFraming: .chunked, stopping: false))
        XCTAssertFalse(HTTPExchangePolicy.keepAliveToClient(request: keep, responseFraming: .untilClose, stopping: false))
        XCTAssertFalse(HTTPExchangePolicy.keepAliveToClient(request: keep, responseFraming: .none, stopping: true))
        var close = HTTPExchangePolicy.Request()
        close.keepAlive = false
        XCTAssertFalse(HTTPExchangePolicy.keepAliveToClient(request: close, responseFraming: .none, stopping: false))
    }

    func testBodyProgressCountsContentLengthAcrossReads() {
        var body = BodyProgress(.contentLength(10))
        let bytes: [UInt8] = Array(repeating: 65, count: 6)
        bytes.withUnsafeBytes { raw in
            guard case .body(6, false) = body.take(from: raw) else { return XCTFail() }
            guard case .body(4, true) = body.take(from: raw) else { return XCTFail() }
        }
        XCTAssertTrue(body.isDone)
    }

    func testBodyProgressFindsTheEndOfAChunkedBodyInPipelinedInput() {
        var body = BodyProgress(.chunked)
        let input = Array("3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n".utf8)
        input.withUnsafeBytes { raw in
            guard case .body(let n, true) = body.take(from: raw) else { return XCTFail() }
            XCTAssertEqual(n, 13)
        }
    }
}

import XCTest
import Glibc
@testable import Balancer

final class EventLoopPartsTests: XCTestCase {
    func testDeadlineHeapPopsInOrder() {
        var heap = DeadlineHeap()
        let deadlines: [Int64] = [50, 10, 40, 10, 30, 20, 60, 5]
        for (i, d) in deadlines.enumerated() { heap.push(.init(deadline: d, slot: UInt32(i), generation: 1)) }
        var out: [Int64] = []
        while let e = heap.pop() { out.append(e.deadline) }
        XCTAssertEqual(out, deadlines.sorted())
    }

    func testLogBufferFormatsNumbersAndAddresses() throws {
        var fds: [CInt] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]) }
        let log = LogBuffer(sink: .fileDescriptor(fds[1]))
        log.append(SocketAddress(numericHost: "127.0.0.1", port: 8080)!)
        log.append(UInt8(ascii: " "))
        log.append(0)
        log.append(UInt8(ascii: " "))
        log.append(-1)
        log.append(UInt8(ascii: " "))
        log.append(1234567890)
        log.append(UInt8(ascii: " "))
        log.appendDate(wallMilliseconds: 1_764_064_862_123)
        log.endLine()
        log.flush()
        close(fds[1])
        var bytes = [UInt8](repeating: 0, count: 256)
        let n = read(fds[0], &bytes, 256)
        let line = String(decoding: bytes[0..<max(n, 0)], as: UTF8.self)
        XCTAssertTrue(line.hasPrefix("127.0.0.1:8080 0 -1 1234567890 ["), line)
        XCTAssertTrue(line.hasSuffix(".123]\n"), line)
        // [dd/Mon/yyyy:hh:mm:ss.mmm]
        let date = line.split(separator: "[")[1]
        XCTAssertEqual(date.count, "25/Nov/2025:10:01:02.123]\n".count, line)
    }
}

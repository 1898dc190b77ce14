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

    /// `transfer` swaps the memory when the destination is empty and takes everything
    /// (the bytes stay where they are), and copies otherwise; either way the bytes arrive
    /// in order and the source gives up exactly what was taken.
    func testByteBufferTransferSwapsIntoAnEmptyBufferAndCopiesOtherwise() {
        var source = ByteBuffer(capacity: 64)
        Array("hello".utf8).withUnsafeBytes { source.append($0) }
        let storage = source.readable.baseAddress
        var destination = ByteBuffer.unallocated
        XCTAssertTrue(destination.transfer(5, from: &source), "an empty destination takes the memory")
        XCTAssertEqual(destination.readable.baseAddress, storage, "no byte moved")
        XCTAssertEqual(Array(destination.readable), Array("hello".utf8))
        XCTAssertTrue(source.isEmpty)
        XCTAssertFalse(source.isAllocated, "the source holds what the destination held: nothing")

        var more = ByteBuffer(capacity: 64)
        Array(" world!".utf8).withUnsafeBytes { more.append($0) }
        XCTAssertFalse(destination.transfer(6, from: &more), "a destination with bytes is appended to")
        XCTAssertEqual(String(decoding: destination.readable, as: UTF8.self), "hello world")
        XCTAssertEqual(String(decoding: more.readable, as: UTF8.self), "!")

        var empty = ByteBuffer(capacity: 64)
        Array("abc".utf8).withUnsafeBytes { more.append($0) }
        XCTAssertFalse(empty.transfer(2, from: &more), "taking part of the source copies")
        XCTAssertEqual(String(decoding: empty.readable, as: UTF8.self), "!a")
        XCTAssertEqual(String(decoding: more.readable, as: UTF8.self), "bc")
        XCTAssertFalse(empty.transfer(0, from: &more))
        XCTAssertEqual(more.readableCount, 2)
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

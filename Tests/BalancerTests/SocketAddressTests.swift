import XCTest
@testable import Balancer

final class SocketAddressTests: XCTestCase {
    private func text(_ host: String) -> String {
        let address = SocketAddress(numericHost: host, port: 80)!
        return address.withNumericHost { String(decoding: $0, as: UTF8.self) }
    }

    func testNumericHostIsFormattedWithoutLeadingZerosOrPadding() {
        for host in ["0.0.0.0", "127.0.0.1", "10.0.100.255", "1.20.3.0", "255.255.255.255", "192.168.1.9"] {
            XCTAssertEqual(text(host), host)
        }
        XCTAssertEqual(text("::1"), "::1")
        XCTAssertEqual(text("2001:db8::8a2e:370:7334"), "2001:db8::8a2e:370:7334")
    }
}

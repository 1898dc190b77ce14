import XCTest
final class PlaceholderIntegration: XCTestCase { func testNothing() {} }

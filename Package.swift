// swift-tools-version:6.0
import PackageDescription

// Strict settings for every Swift target, as hummingbird does: Swift 6 language mode
// (complete concurrency checking) plus warnings we want to hear about.
let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "balancerd",
    products: [
        .executable(name: "balancerd", targets: ["balancerd"]),
        .library(name: "Balancer", targets: ["Balancer"]),
        .library(name: "Discovery", targets: ["Discovery"]),
        // The embedding example of README.md, built and run by IntegrationTests/EmbeddingTests.
        .executable(name: "EmbeddedExample", targets: ["EmbeddedExample"]),
    ],
    targets: [
        // C in the package: declarations Glibc does not export to Swift
        // (epoll, eventfd, splice, pipe2) and wrappers for the sockaddr calls whose
        // transparent-union parameters Swift cannot pass. See include/CBalancerShims.h.
        .target(name: "CBalancerShims"),
        // The system's OpenSSL 3 for TLS termination (Debian: libssl-dev to build, libssl3
        // to run), and wrappers for the macros of its API. See include/CBalancerTLS.h.
        .target(name: "CBalancerTLS", linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        // Exclusivity is checked statically everywhere; the dynamic check Swift adds to
        // every access of a class's stored property (swift_beginAccess/endAccess) is
        // turned off in this target only: the loop thread owns each session and worker,
        // nothing else touches them (see EventLoop's threading contract), and the check
        // showed up on every request in the forwarding path's profile.
        .target(name: "Balancer", dependencies: ["CBalancerShims", "CBalancerTLS"],
                swiftSettings: strict + [.unsafeFlags(["-enforce-exclusivity=unchecked"])]),
        .target(name: "Discovery", dependencies: ["Balancer"], swiftSettings: strict),
        .executableTarget(name: "balancerd", dependencies: ["Balancer", "Discovery", "CBalancerShims"], swiftSettings: strict),
        .executableTarget(name: "EmbeddedExample", dependencies: ["Balancer"], path: "Examples/Embedded", swiftSettings: strict),
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "BalancerTests", dependencies: ["Balancer", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "DiscoveryTests", dependencies: ["Discovery", "Balancer", "TestSupport"], swiftSettings: strict),
        // The command line belongs to the executable; its rules are tested through
        // `@testable import balancerd`.
        .testTarget(name: "balancerdTests", dependencies: ["balancerd", "Balancer"], swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            // The executables are dependencies so that `swift test` builds them: the tests
            // start the real binaries.
            dependencies: ["TestSupport", "balancerd", "EmbeddedExample"],
            exclude: [],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)

// Executables of this package other than balancerd, found where `swift build` / `swift
// test` put them: next to the running test bundle (`.build/<config>/`).
import Glibc

/// The path of the executable product `name` built with the tests. Throws, saying how to
/// build it, when it is not there.
public func builtExecutablePath(_ name: String) throws -> String {
    guard let dir = executableDirectory() else {
        throw TestSupportError("cannot read /proc/self/exe to find the \(name) binary")
    }
    let path = dir + "/" + name
    guard access(path, X_OK) == 0 else {
        throw TestSupportError("\(name) binary not found at \(path): build it first (swift build --product \(name))")
    }
    return path
}

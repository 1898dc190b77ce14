// Typed results of the syscall layer (after swift-system's Errno and NIO's IOResult).
//
// "Would block" is not an error on a non-blocking socket, it is the normal way a
// transfer pauses, so it is a value (`IOResult.wouldBlock`). Real failures carry the
// name of the call and the errno so a log line can say exactly what went wrong.
import Glibc

/// An errno value with Swift names for the ones the proxy branches on.
public struct Errno: RawRepresentable, Error, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let interrupted = Errno(rawValue: EINTR)
    public static let wouldBlock = Errno(rawValue: EAGAIN)
    public static let inProgress = Errno(rawValue: EINPROGRESS)
    public static let connectionRefused = Errno(rawValue: ECONNREFUSED)
    public static let connectionReset = Errno(rawValue: ECONNRESET)
    public static let brokenPipe = Errno(rawValue: EPIPE)
    public static let timedOut = Errno(rawValue: ETIMEDOUT)
    public static let tooManyOpenFiles = Errno(rawValue: EMFILE)
    public static let tooManyOpenFilesInSystem = Errno(rawValue: ENFILE)
    public static let addressInUse = Errno(rawValue: EADDRINUSE)
    public static let invalidArgument = Errno(rawValue: EINVAL)
    public static let notConnected = Errno(rawValue: ENOTCONN)
    public static let hostUnreachable = Errno(rawValue: EHOSTUNREACH)
    public static let networkUnreachable = Errno(rawValue: ENETUNREACH)
    public static let connectionAborted = Errno(rawValue: ECONNABORTED)

    public var description: String {
        guard let cString = strerror(rawValue) else { return "errno \(rawValue)" }
        return String(cString: cString)
    }
}

/// A failed system call: which one, and why.
public struct SystemError: Error, Sendable, CustomStringConvertible {
    public var call: StaticString
    public var errno: Errno

    public init(_ call: StaticString, _ errno: Errno) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(errno) (errno \(errno.rawValue))" }
}

/// The outcome of a non-blocking operation that did not fail.
public enum IOResult<Value> {
    case processed(Value)
    case wouldBlock
}

extension IOResult: Sendable where Value: Sendable {}

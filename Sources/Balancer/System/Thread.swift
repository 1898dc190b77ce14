// A bare pthread for event loops: no Foundation on the loop threads, and the thread's
// whole life is one closure.
import CBalancerShims
import Glibc

public final class LoopThread: @unchecked Sendable {
    private var handle: pthread_t = 0
    private let body: @Sendable () -> Void

    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let rc = pthread_create(&handle, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        // Linux limits thread names to 15 bytes.
        _ = cbs_set_thread_name(handle, String(name.prefix(15)))
    }

    public func join() {
        _ = pthread_join(handle, nil)
    }

    /// For a thread nobody will join: its resources go when it ends.
    public func detach() {
        _ = pthread_detach(handle)
    }
}

// The one signal the library cares about. splice(2) into a socket whose peer is gone
// raises SIGPIPE, and unlike send(2) it has no MSG_NOSIGNAL flag; the default action
// kills the process. A program embedding the proxy must not have to know that, so
// `Proxy.start()` sees to it.
import Glibc

extension Posix {
    /// Sets SIGPIPE to "ignore" (the failing call then returns EPIPE) unless the process
    /// already chose something: a handler of its own or SIG_IGN are left as they are, only
    /// the default action, which kills the process, is replaced. Process-wide; call before
    /// any loop thread can splice.
    static func ignoreBrokenPipe() {
        var current = sigaction()
        guard sigaction(SIGPIPE, nil, &current) == 0 else { return }
        // SIG_DFL is a null handler (Swift spells it nil); with SA_SIGINFO the union holds
        // a three-argument handler instead, which is the process's own.
        let isDefault = current.__sigaction_handler.sa_handler == nil && current.sa_flags & SA_SIGINFO == 0
        if isDefault {
            _ = Glibc.signal(SIGPIPE, SIG_IGN)
        }
    }
}

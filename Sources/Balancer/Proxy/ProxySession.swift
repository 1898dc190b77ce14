// What the worker needs of any client session, whatever its mode.
protocol ProxySession: EventHandler {
    /// Ends the session at once (shutdown, after the grace period).
    func kill(loop: EventLoop)
}

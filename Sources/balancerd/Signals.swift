// Synchronous signal handling for the control thread (see main.swift).
import CBalancerShims

func blockSignals(_ signals: UnsafeBufferPointer<CInt>) -> Bool {
    cbs_block_signals(signals.baseAddress, CInt(signals.count)) == 0
}

/// The next pending signal among `signals`, or -1 after the timeout.
func waitForSignal(_ signals: UnsafeBufferPointer<CInt>, timeoutMilliseconds: Int) -> CInt {
    cbs_sigwait_timeout(signals.baseAddress, CInt(signals.count), CInt(timeoutMilliseconds))
}

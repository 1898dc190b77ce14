// An HTTP load balancer inside a Swift program: 127.0.0.1:LISTEN spread over two servers
// on 127.0.0.1. Run it as `EmbeddedExample LISTEN SERVER1 SERVER2` (three ports; 0 for
// LISTEN picks a free one).
import Balancer
import Glibc

let ports = CommandLine.arguments.dropFirst().map { UInt16($0)! }
let local = { (port: UInt16) in HostPort(host: "127.0.0.1", port: port) }
let configuration = Configuration(
    frontends: [Frontend(name: "web", binds: [local(ports[0])], mode: .http, defaultBackend: "servers")],
    backends: [BackendConfig(name: "servers", mode: .http, servers: [
        ServerConfig(name: "s1", address: local(ports[1])),
        ServerConfig(name: "s2", address: local(ports[2])),
    ])])
let proxy = try Proxy(configuration: configuration, options: ProxyOptions(threads: 2, quiet: false))
proxy.start()
print("balancing \(proxy.boundAddresses[0].address) over s1 and s2")
fflush(nil)   // stdout is block-buffered when it is a pipe
while true { pause() }   // the proxy runs on its own threads; a signal ends the process

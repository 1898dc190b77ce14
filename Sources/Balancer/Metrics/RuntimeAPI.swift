// haproxy's Runtime API (the "stats socket" CLI, doc/management.txt section 9.3): the
// command interpreter. A line in, the bytes to answer out; the socket server
// (RuntimeSocketServer.swift) only moves bytes, so every command is tested without one.
//
// As in haproxy: a line holds commands separated by `;` (a backslash escapes the next
// character); each command's output is followed by an empty line, and in interactive mode
// (`prompt`) by the prompt "> " too. Without `prompt` the connection closes after the
// first line. Reading needs no level; changing a server needs `admin` (haproxy checks
// ACCESS_LVL_ADMIN for `set server`, `set weight`, `enable/disable server`), and it
// answers "Permission denied" below that.
//
// Threads: `execute` runs on the socket server's thread. It reads a fresh StatsSnapshot
// per `show` command and changes servers only through their ServerHealth atomics and
// `Proxy.reweigh`, which loops pick up on their own.

/// What haproxy keeps per CLI connection.
public struct RuntimeSession: Sendable, Equatable {
    public var level: RuntimeSocketConfig.Level
    /// `prompt` mode: answers end with "> " and the connection stays open.
    public var interactive = false
    /// Idle time after which the connection is closed (`set timeout cli`); haproxy's
    /// default for the stats socket is 10 s.
    public var timeout: Duration = .seconds(10)
    /// Set by `quit`, or after the first line outside interactive mode.
    public var closing = false

    public init(level: RuntimeSocketConfig.Level) {
        self.level = level
    }
}

extension RuntimeSocketConfig.Level {
    fileprivate var rank: Int { Self.allCases.firstIndex(of: self)! }
}

public final class RuntimeAPI: Sendable {
    private let proxy: Proxy
    private let version: String
    private let node: String

    /// `node`: what `show info` reports as `node` (haproxy: the host name).
    public init(proxy: Proxy, version: String, node: String = Posix.hostName()) {
        self.proxy = proxy
        self.version = version
        self.node = node
    }

    /// Runs one line as read from the socket (without its "\n") and returns the answer.
    /// Sets `session.closing` when the connection should close after the answer.
    public func execute(line: String, session: inout RuntimeSession) -> String {
        var answer = ""
        let commands = Self.split(line)
        for words in commands where !(words.isEmpty && commands.count > 1) {
            if words == ["quit"] {
                session.closing = true
                return answer
            }
            answer += run(words, session: &session)
            answer += session.interactive ? "\n> " : "\n"
        }
        if !session.interactive { session.closing = true }
        return answer
    }

    /// Splits a line into commands at unescaped `;`, and each command into words at
    /// spaces and tabs. A backslash takes the next character as it is.
    static func split(_ line: String) -> [[String]] {
        var commands: [[String]] = []
        var words: [String] = []
        var word = ""
        var escaped = false
        var inWord = false
        func endWord() {
            if inWord { words.append(word) }
            word = ""
            inWord = false
        }
        for character in line {
            if escaped {
                word.append(character)
                inWord = true
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == ";" {
                endWord()
                commands.append(words)
                words = []
            } else if character == " " || character == "\t" || character == "\r" {
                endWord()
            } else {
                word.append(character)
                inWord = true
            }
        }
        endWord()
        commands.append(words)
        return commands
    }

    // MARK: commands

    private struct Command {
        var usage: String
        var help: String
    }

    /// What `help` lists, in haproxy's order (alphabetical, then help, prompt and quit).
    private static let commands: [Command] = [
        Command(usage: "disable server (DEPRECATED)", help: "disable a server for maintenance (use 'set server' instead)"),
        Command(usage: "enable server  (DEPRECATED)", help: "enable a disabled server (use 'set server' instead)"),
        Command(usage: "get weight <bk>/<srv>", help: "report a server's current weight"),
        Command(usage: "operator", help: "lower the level of the current CLI session to operator"),
        Command(usage: "set server <bk>/<srv> [opts]", help: "change a server's state or weight"),
        Command(usage: "set timeout [cli] <delay>", help: "change a timeout setting"),
        Command(usage: "set weight <bk>/<srv>  (DEPRECATED)", help: "change a server's weight (use 'set server' instead)"),
        Command(usage: "show backend", help: "list backends in the current running config"),
        Command(usage: "show cli level", help: "display the level of the current CLI session"),
        Command(usage: "show info", help: "report information about the running process"),
        Command(usage: "show servers state [<backend>]", help: "dump volatile server information (all or for a single backend)"),
        Command(usage: "show stat [up|no-maint] [iid type sid]", help: "report counters for each proxy and server"),
        Command(usage: "user", help: "lower the level of the current CLI session to user"),
        Command(usage: "help [<command>]", help: "list matching or all commands"),
        Command(usage: "prompt", help: "toggle interactive mode with prompt"),
        Command(usage: "quit", help: "disconnect"),
    ]

    private static func helpLines(_ commands: [Command]) -> String {
        commands.map { command in
            let padded = command.usage.count < 40
                ? command.usage + String(repeating: " ", count: 40 - command.usage.count) : command.usage
            return "  \(padded): \(command.help)\n"
        }.joined()
    }

    private static let permissionDenied = "Permission denied\n"

    private func run(_ words: [String], session: inout RuntimeSession) -> String {
        let snapshot = { self.proxy.statsSnapshot(version: self.version) }
        switch words.first {
        case "help":
            let topic = words.dropFirst()
            let matching = topic.isEmpty ? [] : Self.commands.filter { $0.usage.split(separator: " ").starts(with: topic.map { Substring($0) }) }
            return "The following commands are valid at this level:\n" + Self.helpLines(matching.isEmpty ? Self.commands : matching)
        case "prompt":
            session.interactive.toggle()
            return ""
        case "operator", "user":
            guard words.count == 1, let level = RuntimeSocketConfig.Level(rawValue: words[0]) else { break }
            guard session.level.rank >= level.rank else { return Self.permissionDenied }
            session.level = level
            return ""
        case "show":
            switch words.dropFirst().first {
            case "info": return ShowInfo.text(snapshot(), node: node)
            case "stat": return showStat(Array(words.dropFirst(2)), snapshot())
            case "backend":
                return "# name\n" + snapshot().backends.map { $0.name + "\n" }.joined()
            case "servers" where words.count >= 3 && words[2] == "state":
                let backend = words.count > 3 ? words[3] : nil
                return ServersState.text(snapshot(), backend: backend) ?? "Can't find backend.\n"
            case "cli" where words.count == 3 && words[2] == "level":
                return session.level.rawValue + "\n"
            default: break
            }
        case "get" where words.count >= 2 && words[1] == "weight":
            switch findServer(words.count > 2 ? words[2] : "") {
            case .failure(let message): return message.description
            case .success(let (server, _)):
                let chosen = server.health.operatorWeight.load(ordering: .relaxed)
                return "\(chosen >= 0 ? chosen : server.weight) (initial \(server.weight))\n"
            }
        case "set" where words.count >= 2:
            switch words[1] {
            case "server":
                guard session.level == .admin else { return Self.permissionDenied }
                return setServer(Array(words.dropFirst(2)))
            case "weight":
                guard session.level == .admin else { return Self.permissionDenied }
                return setWeight(target: words.count > 2 ? words[2] : "", words.count > 3 ? words[3] : "")
            case "timeout":
                guard words.count > 2, words[2] == "cli" else { return "'set timeout' only supports 'cli'.\n" }
                // A bare number is seconds here, as in haproxy (timeouts in the file default to ms).
                let text = words.count > 3 ? words[3] : ""
                let delay = HAProxyParser.isDecimal(text) ? Int(text).map { Duration.seconds($0) } : DurationParser.parse(text)
                guard let delay, delay > .zero else {
                    return "Expects an integer value.\n"
                }
                session.timeout = delay
                return ""
            default: break
            }
        case "disable" where words.count >= 2 && words[1] == "server", "enable" where words.count >= 2 && words[1] == "server":
            guard session.level == .admin else { return Self.permissionDenied }
            switch findServer(words.count > 2 ? words[2] : "") {
            case .failure(let message): return message.description
            case .success(let (server, backend)):
                // haproxy: disable sets forced maintenance, enable clears it.
                if words[0] == "disable" {
                    setState(.maint, of: server, backend: backend)
                } else if server.health.adminState == .maint {
                    setState(.ready, of: server, backend: backend)
                }
                return ""
            }
        default: break
        }
        return unknown(words)
    }

    /// haproxy's answer to a command it does not know: the commands that share its first
    /// word, or all of them.
    private func unknown(_ words: [String]) -> String {
        let near = Self.commands.filter { command in
            guard let first = words.first else { return false }
            return command.usage.split(separator: " ").first.map(String.init) == first
        }
        if near.isEmpty {
            return "Unknown command. Please enter one of the following commands only:\n" + Self.helpLines(Self.commands)
        }
        return "Unknown command, but maybe one of the following ones is a better match:\n" + Self.helpLines(near)
    }

    private func showStat(_ arguments: [String], _ snapshot: StatsSnapshot) -> String {
        var filter = StatCSVFilter()
        var positional: [String] = []
        for argument in arguments {
            switch argument {
            case "up": filter.onlyUp = true
            case "no-maint": filter.noMaintenance = true
            default: positional.append(argument)
            }
        }
        // haproxy applies `<iid> <type> <sid>` only when all three are given; the proxy
        // may be named instead of numbered.
        if positional.count >= 3 {
            if let id = Int(positional[0]) {
                filter.proxyID = id
            } else {
                filter.proxyID = StatsProxy.all(snapshot).first { $0.name == positional[0] }?.id ?? 0
            }
            filter.types = Int(positional[1]) ?? -1
            filter.serverID = Int(positional[2]) ?? -1
        }
        return StatCSV.text(snapshot, filter: filter)
    }

    // MARK: changing servers

    /// `B/S` to the server in the current table, or haproxy's error text.
    private func findServer(_ target: String) -> Result<(Server, String), RuntimeAPIMessage> {
        guard let slash = target.firstIndex(of: "/") else { return .failure(RuntimeAPIMessage("Require 'backend/server'.\n")) }
        let backendName = String(target[..<slash]), serverName = String(target[target.index(after: slash)...])
        guard let table = proxy.tables.first(where: { $0.name == backendName }) else {
            return .failure(RuntimeAPIMessage("No such backend.\n"))
        }
        guard let server = table.servers.first(where: { $0.name == serverName }) else {
            return .failure(RuntimeAPIMessage("No such server.\n"))
        }
        return .success((server, backendName))
    }

    private static let setServerUsage = "usage: set server <backend>/<server> state | weight\n"

    private func setServer(_ arguments: [String]) -> String {
        let (server, backend): (Server, String)
        switch findServer(arguments.first ?? "") {
        case .failure(let message): return message.description
        case .success(let found): (server, backend) = found
        }
        switch arguments.count > 1 ? arguments[1] : "" {
        case "state":
            let names: [String: AdminState] = ["ready": .ready, "drain": .drain, "maint": .maint]
            guard arguments.count > 2, let state = names[arguments[2]] else {
                return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n"
            }
            setState(state, of: server, backend: backend)
            return ""
        case "weight":
            return applyWeight(arguments.count > 2 ? arguments[2] : "", to: server, backend: backend)
        default:
            return Self.setServerUsage
        }
    }

    private func setWeight(target: String, _ weight: String) -> String {
        switch findServer(target) {
        case .failure(let message): return message.description
        case .success(let (server, backend)): return applyWeight(weight, to: server, backend: backend)
        }
    }

    private func applyWeight(_ text: String, to server: Server, backend: String) -> String {
        switch Self.parseWeight(text, initial: server.weight) {
        case .failure(let message): return message.description
        case .success(let weight):
            proxy.setOperatorWeight(weight, of: server, backend: backend)
            return ""
        }
    }

    /// haproxy's `server_parse_weight_change_request`: `N` (0-256) or `N%` of the
    /// configured weight (capped at 256), with its error texts (some without a newline,
    /// as haproxy sends them).
    static func parseWeight(_ text: String, initial: Int) -> Result<Int, RuntimeAPIMessage> {
        guard !text.isEmpty else { return .failure(RuntimeAPIMessage("Require <weight> or <weight%>.\n")) }
        // strtol: optional sign, then digits.
        var digits = Substring(text)
        var sign = 1
        if let first = digits.first, first == "-" || first == "+" {
            sign = first == "-" ? -1 : 1
            digits = digits.dropFirst()
        }
        let number = digits.prefix { $0.isASCII && $0.isNumber }
        guard !number.isEmpty else { return .failure(RuntimeAPIMessage("Empty weight string empty or preceded by garbage")) }
        let value = sign * (Int(number.prefix(9)) ?? 0)
        let rest = digits.dropFirst(number.count)
        if rest == "%" {
            guard value >= 0 else { return .failure(RuntimeAPIMessage("Relative weight must be positive.\n")) }
            return .success(min(256, initial * min(value, 25600) / 100))
        }
        guard (0...256).contains(value) else {
            return .failure(RuntimeAPIMessage("Absolute weight can only be between 0 and 256 inclusive.\n"))
        }
        guard rest.isEmpty else { return .failure(RuntimeAPIMessage("Trailing garbage in weight string")) }
        return .success(value)
    }

    private func setState(_ state: AdminState, of server: Server, backend: String) {
        proxy.setAdminState(state, of: server, backend: backend)
    }
}

/// An error answer of the Runtime API, in haproxy's words.
struct RuntimeAPIMessage: Error, Equatable, CustomStringConvertible {
    var description: String
    init(_ text: String) { description = text }
}

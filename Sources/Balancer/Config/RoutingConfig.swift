// The routing part of a frontend's configuration: haproxy's `acl`, `use_backend` and
// `http-request` lines, as plain values (the parser is HAProxyACLParser.swift, the run-time
// form is Routing/RoutingTable.swift). Values are kept as written, so the export writes
// back what the file said.

/// What an ACL looks at (haproxy's fetch, with the derivative's implied match).
public enum ACLCriterion: String, Sendable, Equatable, CaseIterable {
    /// `hdr(host)` / `req.hdr(host)`: the whole Host value, a port included.
    case host = "hdr(host)"
    case requestHost = "req.hdr(host)"
    case hostBegins = "hdr_beg(host)"
    case hostEnds = "hdr_end(host)"
    case hostDomain = "hdr_dom(host)"
    /// From the first slash to before the `?`, as sent (no decoding, no normalisation).
    case path
    case pathBegins = "path_beg"
    case pathEnds = "path_end"
    case pathDirectory = "path_dir"
    case method
    case source = "src"
    /// The client connection came in on a TLS bind (`ssl crt ...`).
    case tls = "ssl_fc"
    /// The server name the TLS client sent (SNI); absent on plain binds and without SNI.
    case tlsServerName = "ssl_fc_sni"

    /// The match a derivative implies; nil for the plain string fetches, which default to
    /// `str` and accept `-m`.
    var impliedMatch: ACLMatch? {
        switch self {
        case .host, .requestHost, .path, .tlsServerName: nil
        case .hostBegins, .pathBegins: .begins
        case .hostEnds, .pathEnds: .ends
        case .hostDomain: .domain
        case .pathDirectory: .directory
        case .method, .source, .tls: nil
        }
    }

    /// A string fetch, compared with one of the `ACLMatch` methods.
    var isString: Bool { self != .method && self != .source && self != .tls }
    var readsHost: Bool { self == .host || self == .requestHost || self == .hostBegins || self == .hostEnds || self == .hostDomain }
}

/// haproxy's string match methods (`-m`), section 7.1.3 of its manual.
public enum ACLMatch: String, Sendable, Equatable, CaseIterable {
    case exact = "str"
    case begins = "beg"
    case ends = "end"
    case substring = "sub"
    /// Delimited by `/` (or an end of the string) on both sides.
    case directory = "dir"
    /// Delimited by `.`, `:`, `/`, `?` (or an end of the string) on both sides.
    case domain = "dom"
}

/// One `acl` line (or the inside of `{ ... }`): a fetch and the patterns it is compared with.
public struct ACLTest: Sendable, Equatable {
    public var criterion: ACLCriterion
    /// `-i`: patterns compare without regard to ASCII case.
    public var ignoreCase: Bool
    /// `-m METHOD` as written; nil when the line has none.
    public var explicitMatch: ACLMatch?
    /// The patterns as written (CIDRs for `src`, method names for `method`; none for `ssl_fc`).
    public var values: [String]

    public init(criterion: ACLCriterion, ignoreCase: Bool = false, explicitMatch: ACLMatch? = nil, values: [String]) {
        self.criterion = criterion
        self.ignoreCase = ignoreCase
        self.explicitMatch = explicitMatch
        self.values = values
    }

    /// The match used for string fetches.
    public var match: ACLMatch { explicitMatch ?? criterion.impliedMatch ?? .exact }
}

/// A named ACL: every `acl NAME ...` line with that name, ORed (haproxy's rule).
public struct ACL: Sendable, Equatable {
    public var name: String
    public var tests: [ACLTest]

    public init(name: String, tests: [ACLTest]) {
        self.name = name
        self.tests = tests
    }
}

/// One operand of a condition: `name`, `!name`, `{ test }` or `!{ test }`.
public struct ACLTerm: Sendable, Equatable {
    public enum Operand: Sendable, Equatable {
        case named(String)
        case anonymous(ACLTest)
    }

    public var operand: Operand
    public var negated: Bool

    public init(_ operand: Operand, negated: Bool = false) {
        self.operand = operand
        self.negated = negated
    }
}

/// `if|unless TERM... [|| TERM...]`: terms side by side are ANDed, `||` (or `or`)
/// separates alternatives, and AND binds tighter (haproxy section 7.2).
public struct ACLCondition: Sendable, Equatable {
    public var unless: Bool
    public var alternatives: [[ACLTerm]]

    public init(unless: Bool = false, alternatives: [[ACLTerm]]) {
        self.unless = unless
        self.alternatives = alternatives
    }
}

public struct UseBackendRule: Sendable, Equatable {
    public var backend: String
    /// nil: always (a `use_backend` line without `if`).
    public var condition: ACLCondition?

    public init(backend: String, condition: ACLCondition?) {
        self.backend = backend
        self.condition = condition
    }
}

/// `http-request redirect location|prefix|scheme VALUE [code N] [drop-query]`.
public struct RedirectRule: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        /// The Location is the value.
        case location
        /// The value, then the request's path and query ("/" alone adds nothing).
        case prefix
        /// `VALUE://HOST` then the path and query.
        case scheme
    }

    public var kind: Kind
    public var value: String
    /// 301, 302 (haproxy's default), 303, 307 or 308.
    public var code: Int
    /// `drop-query`: the query string is left out (prefix and scheme).
    public var dropQuery: Bool

    public init(kind: Kind, value: String, code: Int = 302, dropQuery: Bool = false) {
        self.kind = kind
        self.value = value
        self.code = code
        self.dropQuery = dropQuery
    }
}

/// `http-request replace-path REGEX REPLACEMENT` in the one shape balancerd runs without a
/// regex engine: a literal prefix taken off the front of the path (see PathRewrite.parse).
public struct PathRewrite: Sendable, Equatable {
    /// As written, for the export.
    public var regex: String
    public var replacement: String
    /// The literal the regex anchors on, unescaped.
    public var prefix: String
    public var tail: Tail
    /// What replaces the prefix: the replacement without its `\1`.
    public var insert: String

    public enum Tail: String, Sendable, Equatable {
        /// `(.*)`: any path starting with the prefix; \1 is the rest.
        case any
        /// `(/.*)`: the prefix then a slash; \1 starts at that slash.
        case slash
        /// `(/.*)?$`: the prefix alone, or the prefix then a slash.
        case optionalSlash
    }

    public init(regex: String, replacement: String, prefix: String, tail: Tail, insert: String) {
        self.regex = regex
        self.replacement = replacement
        self.prefix = prefix
        self.tail = tail
        self.insert = insert
    }
}

public enum HTTPRequestAction: Sendable, Equatable {
    /// haproxy's status for a deny is 403 unless `deny_status` says otherwise.
    case deny(status: Int)
    case redirect(RedirectRule)
    case setHeader(name: String, value: String)
    case deleteHeader(name: String)
    case replacePath(PathRewrite)
}

public struct HTTPRequestRule: Sendable, Equatable {
    public var action: HTTPRequestAction
    /// nil: the rule always applies.
    public var condition: ACLCondition?

    public init(action: HTTPRequestAction, condition: ACLCondition? = nil) {
        self.action = action
        self.condition = condition
    }
}

/// Everything a frontend (or listen section) says about routing, in file order.
public struct FrontendRouting: Sendable, Equatable {
    public var acls: [ACL]
    public var requestRules: [HTTPRequestRule]
    public var useBackend: [UseBackendRule]

    public init(acls: [ACL] = [], requestRules: [HTTPRequestRule] = [], useBackend: [UseBackendRule] = []) {
        self.acls = acls
        self.requestRules = requestRules
        self.useBackend = useBackend
    }

    public var isEmpty: Bool { acls.isEmpty && requestRules.isEmpty && useBackend.isEmpty }
}

// What a discovery source asks the router for: routes by host and path prefix, each to a
// service whose servers come with it. Like a BackendSet, a RouteSet is whole and immutable
// (never a diff): the proxy swaps its routing table for the one built from it, and open
// connections keep their server.
//
// The shape is fabio's `urlprefix-` tags, which Consul users already write:
// `urlprefix-api.example.com/v1`, `urlprefix-/static strip=/static`,
// `urlprefix-old.example.com/ redirect=301,https://new.example.com$path`.

/// One route: requests for `host` whose path starts with `pathPrefix` go to `service`.
public struct ServiceRoute: Sendable, Equatable, Hashable {
    /// Lowercased, without a port or a trailing dot; `*.example.com` matches any one or more
    /// labels before `.example.com`. nil: any host (tried after every host route).
    public var host: String?
    /// Starts with "/". The longest prefix that matches wins within a host.
    public var pathPrefix: String
    /// The service (and backend) name the requests go to.
    public var service: String
    /// fabio's `strip=/path`: removed from the front of the path before forwarding.
    public var strip: String?
    /// fabio's `redirect=CODE,URL`: answered with a redirect instead of forwarded.
    public var redirect: RouteRedirect?

    public init(host: String?, pathPrefix: String, service: String, strip: String? = nil, redirect: RouteRedirect? = nil) {
        self.host = host
        self.pathPrefix = pathPrefix
        self.service = service
        self.strip = strip
        self.redirect = redirect
    }
}

/// fabio's `redirect=CODE,URL`. `$path` in the URL stands for the request's path (and query).
public struct RouteRedirect: Sendable, Equatable, Hashable {
    public var status: Int
    public var location: String

    public init(status: Int, location: String) {
        self.status = status
        self.location = location
    }
}

/// Every route a source wants now, and the servers of every service they name.
public struct RouteSet: Sendable, Equatable {
    public var routes: [ServiceRoute]
    /// Service name → its servers (passing instances). A service without servers has no
    /// entry and gets no routes.
    public var services: [String: BackendSet]

    public init(routes: [ServiceRoute] = [], services: [String: BackendSet] = [:]) {
        self.routes = routes
        self.services = services
    }
}

/// Where a route source's sets go: the proxy (which builds and swaps a routing table and
/// the backends of new services), or an embedder's own consumer.
public protocol RoutePublisher: AnyObject, Sendable {
    /// Replaces the discovered routes of `frontend` with `set`. A set equal to the current
    /// one changes nothing. Control thread or a source's thread, never a loop.
    func publishRoutes(_ set: RouteSet, frontend: String) throws
}

/// A privilege a build must be granted before any of its steps may use it (`--allow`, as in
/// buildx). BuildKit's solver checks them on the definition; here the embedding API does, on the
/// lowered graph, before anything runs (`Builder`).
public enum Entitlement: String, Sendable, Hashable, CaseIterable {
    /// RUN steps on the host's network (`RUN --network=host`, `--network host`): they reach the
    /// host's loopback services and abstract unix sockets.
    case networkHost = "network.host"

    /// Parses one `--allow` value. `security.insecure` is refused: rbuild never runs a step with
    /// more privileges than its user namespace gives (`RUN --security=insecure` is refused too).
    public static func parse(_ text: String) throws -> Entitlement {
        if let e = Entitlement(rawValue: text) { return e }
        if text == "security.insecure" {
            throw SolveError("--allow security.insecure: rbuild never grants it: every RUN step runs unprivileged in a user namespace of its own (RUN --security=insecure is refused as well)")
        }
        throw SolveError("--allow \(text): unknown entitlement (rbuild knows \(allCases.map(\.rawValue).joined(separator: ", ")))")
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CRBuildSys
import Foundation

/// How ids inside the sandbox map to host ids.
public enum IDMappingMode: String, Sendable, Codable {
    /// The invoking user becomes 0; no other id exists inside. Always works.
    case single
    /// 0 is the invoking user and 1…N come from /etc/subuid and /etc/subgid, written by the
    /// setuid helpers newuidmap/newgidmap (shadow's uidmap package).
    case subordinate
    /// rbuild runs as real root: 0…65535 map to themselves, still inside a user namespace.
    case root
    /// rbuild runs as root where no user namespace can be made (a CI container's seccomp profile
    /// refuses them): there is none, the ids are the host's (the container's) own, and sandboxes
    /// use the chroot isolation.
    case host
}

/// Whether this process can create a user namespace (probed once: a child cloned into one).
public enum UserNamespaceSupport {
    /// nil when it can, else why not.
    public static let problem: String? = {
        let rc = rb_userns_probe()
        guard rc != 0 else { return nil }
        let maxNS = (try? String(contentsOfFile: "/proc/sys/user/max_user_namespaces", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        return "clone(CLONE_NEWUSER): \(errnoText(-rc)) (max_user_namespaces=\(maxNS)"
            + (rc == -EPERM ? "; a seccomp profile (Docker's and Kubernetes' defaults) or a policy forbids them)" : ")")
    }()
}

/// One line of /etc/subuid or /etc/subgid that applies to this user.
public struct SubordinateRange: Sendable, Equatable, Codable {
    public var start: UInt32
    public var count: UInt32
}

/// The identity plan for this host and user, decided once per process.
public struct IDMapping: Sendable {
    public var mode: IDMappingMode
    public var hostUID: UInt32
    public var hostGID: UInt32
    public var uidRange: SubordinateRange?
    public var gidRange: SubordinateRange?
    public var newuidmap: String?
    public var newgidmap: String?
    /// Why this mode was chosen (shown by `rbuild info`).
    public var reason: String
    /// rbuild already runs in a user namespace of its own with this mode's map (see
    /// `UserNamespace.enter`): sandboxes map the ids that exist here onto themselves, written
    /// directly (we hold CAP_SETUID over them), and `hostUID`/`hostGID` are the builder's own
    /// ids here, 0.
    public var nested = false

    /// The highest id that exists inside the sandbox.
    public var maxInsideUID: UInt32 {
        switch mode {
        case .single: return 0
        case .subordinate: return uidRange.map { $0.count } ?? 0
        case .root, .host: return 65535
        }
    }
    public var maxInsideGID: UInt32 {
        switch mode {
        case .single: return 0
        case .subordinate: return gidRange.map { $0.count } ?? 0
        case .root, .host: return 65535
        }
    }

    /// Ids 0…65535 are what images expect (apt's _apt is 42, nobody is 65534).
    package static let wantedCount: UInt32 = 65535

    /// Decides the mode for the current process. `force` overrides the automatic choice.
    public static func detect(force: IDMappingMode? = nil,
                              subuidPath: String = "/etc/subuid",
                              subgidPath: String = "/etc/subgid") -> IDMapping {
        let uid = getuid(), gid = getgid()
        if let outer = OuterNamespace.current, uid == 0 {
            var m = IDMapping(mode: outer.mode, hostUID: 0, hostGID: 0,
                              uidRange: outer.uids > 0 ? SubordinateRange(start: 1, count: outer.uids) : nil,
                              gidRange: outer.gids > 0 ? SubordinateRange(start: 1, count: outer.gids) : nil,
                              reason: outer.reason, nested: true)
            if force == .single && outer.mode != .single {
                m.mode = .single
                m.reason = "single-id mode requested"
            } else if force == .subordinate && outer.mode != .subordinate {
                m.reason = "subordinate ids requested but unavailable: " + outer.reason
            }
            return m
        }
        let name = userName(uid: uid)
        var m = IDMapping(mode: .single, hostUID: uid, hostGID: gid, reason: "")
        if uid == 0 && force != .single {
            if let why = UserNamespaceSupport.problem {
                m.mode = .host
                m.reason = "running as root where no user namespace can be made (\(why)): the ids are this system's own"
            } else {
                m.mode = .root
                m.reason = "running as root: ids 0-65535 map to themselves inside a user namespace"
            }
            return m
        }
        m.uidRange = parseSubordinate(path: subuidPath, name: name, id: uid)
        m.gidRange = parseSubordinate(path: subgidPath, name: name, id: uid)
        m.newuidmap = findExecutable("newuidmap")
        m.newgidmap = findExecutable("newgidmap")
        if force == .single {
            m.reason = "single-id mode requested"
            return m
        }
        switch (m.uidRange, m.gidRange, m.newuidmap, m.newgidmap) {
        case (.some, .some, .some, .some):
            m.mode = .subordinate
            m.reason = "\(subuidPath) and \(subgidPath) give \(name) a range and newuidmap/newgidmap are installed"
        case (nil, _, _, _), (_, nil, _, _):
            m.reason = "no range for \(name) in \(subuidPath)/\(subgidPath): only your own id exists inside (add one with `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 \(name)`)"
        default:
            m.reason = "newuidmap/newgidmap not found: install the uidmap package to use the range in \(subuidPath)"
        }
        if force == .subordinate && m.mode != .subordinate {
            m.reason = "subordinate ids requested but unavailable: " + m.reason
        }
        return m
    }

    /// Parses subuid/subgid text: `NAME_OR_UID:START:COUNT` lines; the first match wins.
    package static func parseSubordinate(text: String, name: String, id: UInt32) -> SubordinateRange? {
        for line in text.split(separator: "\n") {
            let f = line.split(separator: ":", omittingEmptySubsequences: false)
            guard f.count == 3, f[0] == name || f[0] == String(id),
                  let start = UInt32(f[1].trimmingCharacters(in: .whitespaces)),
                  let count = UInt32(f[2].trimmingCharacters(in: .whitespaces)), count > 0 else { continue }
            return SubordinateRange(start: start, count: min(count, wantedCount))
        }
        return nil
    }

    static func parseSubordinate(path: String, name: String, id: UInt32) -> SubordinateRange? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return parseSubordinate(text: text, name: name, id: id)
    }

    /// The uid_map/gid_map lines for the child (what newuidmap is asked to write, or what we write).
    package func mapLines(forUIDs: Bool) -> [(inside: UInt32, outside: UInt32, count: UInt32)] {
        if nested {
            // Each id that exists in rbuild's own namespace maps to itself, extent for extent
            // (the kernel wants each line inside one line of the parent's map): 0, then the range.
            let top = forUIDs ? maxInsideUID : maxInsideGID
            return top == 0 ? [(0, 0, 1)] : [(0, 0, 1), (1, 1, top)]
        }
        switch mode {
        case .single:
            return [(0, forUIDs ? hostUID : hostGID, 1)]
        case .root, .host:
            return [(0, 0, IDMapping.wantedCount + 1)]
        case .subordinate:
            let range = forUIDs ? uidRange! : gidRange!
            return [(0, forUIDs ? hostUID : hostGID, 1), (1, range.start, range.count)]
        }
    }

    /// The id inside the sandbox that a host id stands for; nil when the map has none.
    public func insideID(host: UInt32, uid: Bool) -> UInt32? {
        for l in mapLines(forUIDs: uid) where host >= l.outside && host - l.outside < l.count {
            return l.inside + (host - l.outside)
        }
        return nil
    }
}

/// The login name for a uid, or the number as text.
package func userName(uid: uid_t) -> String {
    var pwd = passwd()
    var result: UnsafeMutablePointer<passwd>?
    var buf = [CChar](repeating: 0, count: 4096)
    if getpwuid_r(uid, &pwd, &buf, buf.count, &result) == 0, let r = result {
        return String(cString: r.pointee.pw_name)
    }
    return String(uid)
}

/// Finds a program on PATH, then in the sbin/bin directories uidmap installs to.
package func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    let dirs = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
    for d in dirs where !d.isEmpty {
        let candidate = d + "/" + name
        if access(candidate, X_OK) == 0 { return candidate }
    }
    return nil
}


/// What the outer rbuild process decided before it re-executed itself in a user namespace of its
/// own (RBuildRuntime's `UserNamespace.enter`), handed down in the environment.
package struct OuterNamespace: Sendable {
    package var mode: IDMappingMode
    package var uids: UInt32
    package var gids: UInt32
    package var parent: pid_t
    package var reason: String

    package static let variable = "RBUILD_USERNS"
    package static let reasonVariable = "RBUILD_USERNS_REASON"

    /// Set in the re-executed process: the outer mode and map sizes.
    package static let current: OuterNamespace? = {
        let env = ProcessInfo.processInfo.environment
        guard let v = env[variable], getuid() == 0 else { return nil }
        let f = v.split(separator: ":").map(String.init)
        guard f.count == 4, let mode = IDMappingMode(rawValue: f[0]), let u = UInt32(f[1]), let g = UInt32(f[2]),
              let parent = Int32(f[3]) else { return nil }
        return OuterNamespace(mode: mode, uids: u, gids: g, parent: parent,
                              reason: (env[reasonVariable] ?? "") + "; rbuild runs in a user namespace of its own with that map")
    }()
}

#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild

/// One resource limit of a sandboxed process, as docker's `--ulimit NAME=SOFT[:HARD]` gives it
/// (`nofile=1024:2048`, `nproc=512`, `-1` for unlimited); set with setrlimit(2) in the child
/// before exec.
public struct Ulimit: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    /// nil: unlimited (RLIM_INFINITY).
    public var soft: UInt64?
    public var hard: UInt64?

    /// docker's names and their RLIMIT_ numbers (asm-generic/resource.h: the same on every
    /// architecture rbuild builds for; glibc's header hides some from Swift behind __USE_GNU).
    static let resources: [String: Int32] = [
        "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6, "nofile": 7, "memlock": 8,
        "locks": 10, "sigpending": 11, "msgqueue": 12, "nice": 13, "rtprio": 14, "rttime": 15,
    ]

    public init(name: String, soft: UInt64?, hard: UInt64?) {
        self.name = name
        self.soft = soft
        self.hard = hard
    }

    /// `NAME=SOFT[:HARD]`: HARD defaults to SOFT; `-1` is unlimited; the soft limit may not pass
    /// the hard one.
    public static func parse(_ text: String) throws -> Ulimit {
        let kv = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard kv.count == 2, resources[kv[0]] != nil else {
            throw RuntimeError(.badOption, "--ulimit \(text): expected NAME=SOFT[:HARD] with NAME one of \(resources.keys.sorted().joined(separator: ", "))")
        }
        func value(_ s: Substring) throws -> UInt64? {
            if s == "-1" || s == "unlimited" { return nil }
            guard let n = UInt64(s) else { throw RuntimeError(.badOption, "--ulimit \(text): \"\(s)\" is not a number (or -1 for unlimited)") }
            return n
        }
        let parts = kv[1].split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { throw RuntimeError(.badOption, "--ulimit \(text): expected NAME=SOFT[:HARD]") }
        let soft = try value(parts[0])
        let hard = parts.count == 2 ? try value(parts[1]) : soft
        guard (soft ?? .max) <= (hard ?? .max) else {
            throw RuntimeError(.badOption, "--ulimit \(text): the soft limit is above the hard one")
        }
        return Ulimit(name: kv[0], soft: soft, hard: hard)
    }

    public var description: String {
        func v(_ n: UInt64?) -> String { n.map(String.init) ?? "-1" }
        return "\(name)=\(v(soft)):\(v(hard))"
    }

    var resource: Int32 { Ulimit.resources[name]! }

    /// Throws when the hard limit asked for is above this process's: only CAP_SYS_RESOURCE in
    /// the initial user namespace may raise a hard limit (setrlimit(2)), which no rootless
    /// sandbox has — the step would fail at setrlimit, so the build fails before it starts.
    public func checkAllowed() throws {
        var rl = rlimit()
        guard getrlimit(__rlimit_resource_t(resource), &rl) == 0 else { return }
        let current: UInt64? = rl.rlim_max == rlim_t.max ? nil : UInt64(rl.rlim_max)
        if let current, (hard ?? .max) > current {
            throw RuntimeError(.badOption, "--ulimit \(self): the hard limit is above yours (\(name) \(current)); "
                + "an unprivileged process cannot raise a hard limit: raise it for your session (limits.conf, systemd's Limit\(name.uppercased())=) or ask for at most \(current)")
        }
    }

    /// The child's form (RLIM_INFINITY is all ones).
    var plan: rb_rlimit {
        rb_rlimit(resource: resource, soft: soft ?? .max, hard: hard ?? .max)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild
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
        case .root: return 65535
        }
    }
    public var maxInsideGID: UInt32 {
        switch mode {
        case .single: return 0
        case .subordinate: return gidRange.map { $0.count } ?? 0
        case .root: return 65535
        }
    }

    /// Ids 0…65535 are what images expect (apt's _apt is 42, nobody is 65534).
    static let wantedCount: UInt32 = 65535

    /// Decides the mode for the current process. `force` overrides the automatic choice.
    public static func detect(force: IDMappingMode? = nil,
                              subuidPath: String = "/etc/subuid",
                              subgidPath: String = "/etc/subgid") -> IDMapping {
        let uid = getuid(), gid = getgid()
        if let outer = UserNamespace.outer, uid == 0 {
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
            m.mode = .root
            m.reason = "running as root: ids 0-65535 map to themselves inside a user namespace"
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
    static func parseSubordinate(text: String, name: String, id: UInt32) -> SubordinateRange? {
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
    func mapLines(forUIDs: Bool) -> [(inside: UInt32, outside: UInt32, count: UInt32)] {
        if nested {
            // Each id that exists in rbuild's own namespace maps to itself, extent for extent
            // (the kernel wants each line inside one line of the parent's map): 0, then the range.
            let top = forUIDs ? maxInsideUID : maxInsideGID
            return top == 0 ? [(0, 0, 1)] : [(0, 0, 1), (1, 1, top)]
        }
        switch mode {
        case .single:
            return [(0, forUIDs ? hostUID : hostGID, 1)]
        case .root:
            return [(0, 0, IDMapping.wantedCount + 1)]
        case .subordinate:
            let range = forUIDs ? uidRange! : gidRange!
            return [(0, forUIDs ? hostUID : hostGID, 1), (1, range.start, range.count)]
        }
    }

    /// Writes the child's maps. Runs in the parent between clone and the child's go-ahead.
    func apply(to pid: pid_t) throws {
        if nested {
            if mode == .single { try writeProcFile(pid, "setgroups", "deny") }
            try writeProcFile(pid, "uid_map", render(mapLines(forUIDs: true)))
            try writeProcFile(pid, "gid_map", render(mapLines(forUIDs: false)))
            return
        }
        switch mode {
        case .single, .root:
            if mode == .single {
                // Unprivileged writers must deny setgroups first (user_namespaces(7)).
                try writeProcFile(pid, "setgroups", "deny")
            }
            try writeProcFile(pid, "uid_map", render(mapLines(forUIDs: true)))
            try writeProcFile(pid, "gid_map", render(mapLines(forUIDs: false)))
        case .subordinate:
            try runHelper(newuidmap!, pid: pid, lines: mapLines(forUIDs: true))
            try runHelper(newgidmap!, pid: pid, lines: mapLines(forUIDs: false))
        }
    }

    private func render(_ lines: [(inside: UInt32, outside: UInt32, count: UInt32)]) -> String {
        lines.map { "\($0.inside) \($0.outside) \($0.count)\n" }.joined()
    }

    private func writeProcFile(_ pid: pid_t, _ name: String, _ text: String) throws {
        let path = "/proc/\(pid)/\(name)"
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw RuntimeError(.idMapFailed, "cannot open \(path): \(errnoText(errno))")
        }
        defer { close(fd) }
        let ok = text.withCString { p in write(fd, p, strlen(p)) == strlen(p) }
        if !ok {
            throw RuntimeError(.idMapFailed, "writing '\(text.trimmingCharacters(in: .newlines))' to \(path) failed: \(errnoText(errno))")
        }
    }

    private func runHelper(_ tool: String, pid: pid_t, lines: [(inside: UInt32, outside: UInt32, count: UInt32)]) throws {
        var args = [String(pid)]
        for l in lines { args += [String(l.inside), String(l.outside), String(l.count)] }
        let (status, output) = try runProgram(tool, args)
        if status != 0 {
            let toolName = (tool as NSString).lastPathComponent
            throw RuntimeError(.idMapFailed,
                "\(toolName) \(args.joined(separator: " ")) failed (exit \(status)): \(output.trimmingCharacters(in: .whitespacesAndNewlines)); check /etc/subuid and /etc/subgid, or force single-id mode with RBUILD_IDMAP=single")
        }
    }
}

/// The login name for a uid, or the number as text.
func userName(uid: uid_t) -> String {
    var pwd = passwd()
    var result: UnsafeMutablePointer<passwd>?
    var buf = [CChar](repeating: 0, count: 4096)
    if getpwuid_r(uid, &pwd, &buf, buf.count, &result) == 0, let r = result {
        return String(cString: r.pointee.pw_name)
    }
    return String(uid)
}

/// Finds a program on PATH, then in the sbin/bin directories uidmap installs to.
func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    let dirs = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
    for d in dirs where !d.isEmpty {
        let candidate = d + "/" + name
        if access(candidate, X_OK) == 0 { return candidate }
    }
    return nil
}

/// Runs a host program to completion and returns its status and combined output.
func runProgram(_ path: String, _ args: [String]) throws -> (Int32, String) {
    // posix_spawn, not Foundation's Process: Process costs about 50 ms a launch here, and every
    // sandbox in subordinate mode runs two of these (newuidmap, newgidmap).
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else {
        throw RuntimeError(.spawnFailed, "cannot run \(path): pipe: \(errnoText(errno))")
    }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    let argv = ([path] + args).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
    close(fds[1])
    guard rc == 0 else {
        close(fds[0])
        throw RuntimeError(.spawnFailed, "cannot run \(path): \(errnoText(rc))")
    }
    var output: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        output += buf[0..<n]
    }
    close(fds[0])
    var status: Int32 = 0
    let w = rb_waitpid(pid, &status)
    guard w >= 0 else { throw RuntimeError(.spawnFailed, "waiting for \(path) failed: \(errnoText(-w))") }
    let code = rb_wifexited(status) != 0 ? rb_wexitstatus(status) : 128 + rb_wtermsig(status)
    return (code, String(decoding: output, as: UTF8.self))
}

import Foundation
import RBuildRuntime
import RBuildSystem
import Synchronization

/// The ssh client command: `RBUILD_SSH_COMMAND` (words, as GIT_SSH_COMMAND; e.g. `ssh -F
/// ~/other_config`), else `ssh` on PATH.
public enum SSHClient {
    public static func command() -> [String] {
        let text = ProcessInfo.processInfo.environment["RBUILD_SSH_COMMAND"] ?? ""
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        return words.isEmpty ? ["ssh"] : words
    }

    /// One word for a POSIX shell (ssh hands the remote command to the node user's shell).
    public static func quote(_ word: String) -> String {
        if !word.isEmpty, word.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) && $0.isASCII || "-_./=:,@%+".unicodeScalars.contains($0) }) {
            return word
        }
        return "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// The argument vector that runs `remote` (words) on `endpoint`; `forwards` are unix
    /// sockets made on the node (remote path → local socket) for the session's life.
    public static func arguments(_ endpoint: NodeEndpoint, remote: [String], forwards: [(remote: String, local: String)] = []) -> [String] {
        var args = command()
        args += ["-T", "-o", "ServerAliveInterval=15"]
        if !forwards.isEmpty {
            args += ["-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=no"]
            for f in forwards { args += ["-R", "\(f.remote):\(f.local)"] }
        }
        if let port = endpoint.port { args += ["-p", String(port)] }
        args.append((endpoint.user.map { $0 + "@" } ?? "") + endpoint.host)
        args.append("--")
        args.append(remote.map(quote).joined(separator: " "))
        return args
    }
}

/// A running ssh session with a node: its stdin, stdout and stderr as pipes. The session's
/// pipes may be handed to another process (rbuild's own re-execution in its user namespace,
/// where ssh itself would be someone else) through `encode()` and `decode`.
public final class NodeLink: @unchecked Sendable {
    public let node: BuilderNode
    /// The platforms this node builds.
    public let platforms: [Platform]
    /// Written: the node's stdin. Read: its stdout, its stderr.
    public let input: Int32, output: Int32, errors: Int32
    /// The ssh process (0 when this process is not its parent).
    public let pid: pid_t
    /// `--ssh` ids → the agent socket the session forwards on the node.
    public let agentSockets: [String: String]

    init(node: BuilderNode, platforms: [Platform], input: Int32, output: Int32, errors: Int32, pid: pid_t,
         agentSockets: [String: String] = [:]) {
        self.node = node
        self.platforms = platforms
        self.agentSockets = agentSockets
        self.input = input
        self.output = output
        self.errors = errors
        self.pid = pid
    }

    /// Starts `ssh NODE rbuild node-build` for `platforms`.
    public static func connect(_ node: BuilderNode, platforms: [Platform], forwards: [(remote: String, local: String)] = [],
                               agentSockets: [String: String] = [:]) throws -> NodeLink {
        let remote = node.remoteCommand(["node-build"], stateDirectory: true)
        let (pid, input, output, errors) = try spawn(SSHClient.arguments(node.endpoint, remote: remote, forwards: forwards), node: node)
        return NodeLink(node: node, platforms: platforms, input: input, output: output, errors: errors, pid: pid,
                        agentSockets: agentSockets)
    }

    struct Wire: Codable { var node: BuilderNode; var platforms: [String]; var fds: [Int32]; var agents: [String: String] }

    /// Sessions in the environment of a process that inherits their fds (made inheritable here).
    public static func encode(_ links: [NodeLink]) -> String {
        let wires = links.map { l in
            for fd in [l.input, l.output, l.errors] { _ = fcntl(fd, F_SETFD, 0) }
            return Wire(node: l.node, platforms: l.platforms.map(\.description), fds: [l.input, l.output, l.errors], agents: l.agentSockets)
        }
        return String(decoding: (try? JSONEncoder().encode(wires)) ?? Data("[]".utf8), as: UTF8.self)
    }

    /// Sessions another process started (`encode`), close-on-exec again from here on.
    public static func decode(_ text: String) throws -> [NodeLink] {
        let wires = try JSONDecoder().decode([Wire].self, from: Data(text.utf8))
        return try wires.map { w in
            guard w.fds.count == 3 else { throw NodeError("a node session handed down without its three fds") }
            for fd in w.fds {
                guard fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 else { throw NodeError("node \(w.node.name): its session's fd \(fd) is not open") }
            }
            return NodeLink(node: w.node, platforms: try w.platforms.map(Platform.init(parsing:)), input: w.fds[0], output: w.fds[1],
                            errors: w.fds[2], pid: 0, agentSockets: w.agents)
        }
    }

    private let inputOpen = Mutex(true)

    /// Closes the node's stdin (once): a node still building stops (its rbuild sees the end).
    public func closeInput() {
        if inputOpen.withLock({ let was = $0; $0 = false; return was }) { close(input) }
    }

    /// Reaps the ssh process when this process started it.
    public func wait() {
        guard pid > 0 else { return }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    /// `posix_spawnp` of the ssh client with three pipes; every other fd of ours is close-on-exec.
    static func spawn(_ args: [String], node: BuilderNode) throws -> (pid_t, Int32, Int32, Int32) {
        var pipes: [[Int32]] = []
        do {
            for _ in 0..<3 {
                let p = try HelperProcess.pipe(for: "ssh to node \(node.name)")
                pipes.append([p.read, p.write])
            }
        } catch {
            for q in pipes { q.forEach { close($0) } }
            throw error
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipes[0][0], 0)
        posix_spawn_file_actions_adddup2(&actions, pipes[1][1], 1)
        posix_spawn_file_actions_adddup2(&actions, pipes[2][1], 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT] { sigaddset(&defaults, s) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var pid: pid_t = 0
        let cargs = args.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        let rc = posix_spawnp(&pid, args[0], &actions, &attr, cargs, environ)
        close(pipes[0][0]); close(pipes[1][1]); close(pipes[2][1])
        guard rc == 0 else {
            close(pipes[0][1]); close(pipes[1][0]); close(pipes[2][0])
            throw NodeError("node \(node.name): cannot start \(args[0]): \(errnoText(rc)) (install openssh-client, or set RBUILD_SSH_COMMAND)")
        }
        return (pid, pipes[0][1], pipes[1][0], pipes[2][0])
    }

    /// Runs `remote` on `node` to the end: its exit status, stdout and stderr.
    public static func run(_ node: BuilderNode, _ remote: [String]) throws -> (status: Int32, output: [UInt8], errors: String) {
        let (pid, input, output, errors) = try spawn(SSHClient.arguments(node.endpoint, remote: remote), node: node)
        close(input)
        let errorText = Mutex<[UInt8]>([])
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let bytes = (try? readAll(errors)) ?? []
            errorText.withLock { $0 = bytes }
            done.signal()
        }
        let out = (try? readAll(output)) ?? []
        done.wait()
        close(output); close(errors)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (code, out, String(decoding: errorText.withLock { $0 }, as: UTF8.self))
    }

    /// Asks `node` for its rbuild's version and platforms (`rbuild --version`, `rbuild info
    /// --format json`), in one ssh session.
    public static func probe(_ node: BuilderNode) throws -> NodeProbe {
        let version = node.remoteCommand(["--version"]).map(SSHClient.quote).joined(separator: " ")
        let info = node.remoteCommand(["info", "--format", "json"]).map(SSHClient.quote).joined(separator: " ")
        // One remote command line: the version's line, then the JSON.
        let r = try run(node, ["sh", "-c", version + " && " + info])
        guard r.status == 0 else {
            let why = r.errors.trimmingCharacters(in: .whitespacesAndNewlines)
            throw NodeError("node \(node.name) (\(node.endpoint)): " + (why.isEmpty ? "ssh exited with status \(r.status)" : why)
                + (r.status == 127 ? " (is rbuild installed there? --driver-opt rbuild=PATH names it)" : ""))
        }
        guard let newline = r.output.firstIndex(of: 10) else { throw NodeError("node \(node.name): rbuild --version printed nothing") }
        let versionLine = String(decoding: r.output[..<newline], as: UTF8.self).trimmingCharacters(in: .whitespaces)
        let report: HostReport
        do {
            report = try JSONDecoder().decode(HostReport.self, from: Data(r.output[(newline + 1)...]))
        } catch {
            throw NodeError("node \(node.name): its rbuild info --format json cannot be read (\(error)); is its rbuild \(versionLine) too old?")
        }
        var native: [String] = [], emulated: [String] = []
        for p in report.platforms where p.supported {
            if p.how.hasPrefix("native") { native.append(p.platform) } else { emulated.append(p.platform) }
        }
        return NodeProbe(version: versionLine, architecture: report.architecture, native: native, emulated: emulated,
                         time: Int64(Date().timeIntervalSince1970))
    }
}

/// Which node builds which platforms.
public struct Placement: Sendable {
    /// nil: this machine.
    public var node: BuilderNode?
    public var platforms: [Platform]

    /// Whether `list` (platform strings) names `p`, in normal form (`arm64/v8` is `arm64`).
    static func has(_ list: [String], _ p: Platform) -> Bool {
        list.contains { (try? Platform(parsing: $0)).map(p.isSame) ?? false }
    }

    /// Each platform goes to the first node that builds it natively (declared with `--platform`,
    /// else by its probe), else to this machine if it runs it natively, else to the first node
    /// that emulates it, else to this machine. A remote node's qemu is no faster than ours, so a
    /// native local build beats an emulated remote one. Nodes in `order`, platforms kept in
    /// the order asked.
    public static func place(_ platforms: [Platform], nodes: [BuilderNode], localNative: (Platform) -> Bool) -> [Placement] {
        var chosen: [(node: BuilderNode?, platform: Platform)] = []
        for p in platforms {
            let node = nodes.first { has($0.platforms, p) }
                ?? nodes.first { $0.platforms.isEmpty && has($0.probe?.native ?? [], p) }
                ?? (localNative(p) ? nil : nodes.first { has($0.probe?.emulated ?? [], p) })
            chosen.append((node, p))
        }
        var out: [Placement] = []
        for c in chosen {
            if let i = out.firstIndex(where: { $0.node?.name == c.node?.name }) { out[i].platforms.append(c.platform) }
            else { out.append(Placement(node: c.node, platforms: [c.platform])) }
        }
        return out
    }

    /// Whether `place` needs a probe of some node to decide (a platform no node declares and
    /// this machine does not run natively).
    public static func needsProbe(_ platforms: [Platform], nodes: [BuilderNode], localNative: (Platform) -> Bool) -> Bool {
        platforms.contains { p in !localNative(p) && !nodes.contains { has($0.platforms, p) } }
    }
}

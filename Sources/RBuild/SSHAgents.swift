import Foundation
import RBuildRuntime
import RBuildSolver
import RBuildSystem

/// The agents behind `--ssh`: for each id, the socket of a running agent (`default` alone is
/// $SSH_AUTH_SOCK; `ID=SOCKET`), or an agent rbuild starts for the build and loads the key
/// files into (`ID=KEYFILE[,KEYFILE…]`), as buildx does with its in-process agent. rbuild's own
/// agents are OpenSSH's `ssh-agent` (no agent protocol written here), started with a `cat`
/// reading a pipe from rbuild as its command: the build's end stops the agent (SIGTERM: it
/// removes its socket); if rbuild dies however it dies, the pipe closes, `cat` ends, and
/// ssh-agent exits within its 10 s check of that process, so no agent holding the user's keys
/// outlives the build for long.
final class SSHAgents: @unchecked Sendable {
    private(set) var sockets: [String: String] = [:]
    private var started: [(command: HelperProcess, agent: pid_t, lifeline: Int32, directory: String)] = []

    /// Starts what `ssh` asks for (id → paths; no path: $SSH_AUTH_SOCK).
    init(_ ssh: [String: [String]]) throws {
        do {
            for (id, paths) in ssh.sorted(by: { $0.key < $1.key }) {
                sockets[id] = try agent(id: id, paths: paths)
            }
        } catch {
            stop()
            throw error
        }
    }

    deinit { stop() }

    func stop() {
        for (command, agent, lifeline, directory) in started {
            if agent > 0 { kill(agent, SIGTERM) }
            close(lifeline)
            command.wait()
            try? FileManager.default.removeItem(atPath: directory)
        }
        started.removeAll()
    }

    private func agent(id: String, paths: [String]) throws -> String {
        if paths.isEmpty {
            guard let sock = ProcessInfo.processInfo.environment["SSH_AUTH_SOCK"], !sock.isEmpty else {
                throw BuildFailure("--ssh \(id): SSH_AUTH_SOCK is not set (start ssh-agent, or pass --ssh \(id)=SOCKET|KEYFILE)")
            }
            return try socket(sock, id: id)
        }
        var st = stat()
        let kinds = try paths.map { p -> mode_t in
            guard stat(p, &st) == 0 else {
                throw BuildFailure("--ssh \(id)=\(p): \(String(cString: strerror(errno)))")
            }
            return st.st_mode & S_IFMT
        }
        if kinds.allSatisfy({ $0 == S_IFSOCK }) {
            guard paths.count == 1 else { throw BuildFailure("--ssh \(id): give one agent socket, not \(paths.count)") }
            return paths[0]
        }
        guard kinds.allSatisfy({ $0 == S_IFREG }) else {
            throw BuildFailure("--ssh \(id)=\(paths.joined(separator: ",")): expected an agent socket or private key files")
        }
        return try startAgent(id: id, keys: paths)
    }

    private func socket(_ path: String, id: String) throws -> String {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw BuildFailure("--ssh \(id): \(path) is not an agent socket")
        }
        return path
    }

    private func startAgent(id: String, keys: [String]) throws -> String {
        guard let agent = findExecutable("ssh-agent"), let add = findExecutable("ssh-add") else {
            throw BuildFailure("--ssh \(id): loading key files needs OpenSSH's ssh-agent and ssh-add (apt install openssh-client)")
        }
        guard let dir = makeTemporaryDirectory(prefix: (NSTemporaryDirectory() as NSString).appendingPathComponent("rbuild-ssh-")) else {
            throw BuildFailure("--ssh \(id): cannot create a directory for its agent: \(String(cString: strerror(errno)))")
        }
        let sock = dir + "/agent.sock"
        // `sh` tells us the agent's pid (ssh-agent sets SSH_AGENT_PID for its command), then
        // becomes the `cat` whose end ends the agent. Started by rb_spawn_helper, not Process:
        // Process's child would pass the pipe Process watches on to the agent, and waiting for
        // `cat` would then wait for the agent.
        let lifeline: (read: Int32, write: Int32), report: (read: Int32, write: Int32)
        do {
            lifeline = try HelperProcess.pipe(for: agent)
            report = try HelperProcess.pipe(for: agent)
        } catch {
            try? FileManager.default.removeItem(atPath: dir)
            throw BuildFailure("--ssh \(id): \(error)")
        }
        let command: HelperProcess
        do {
            command = try HelperProcess.spawn(agent, [agent, "-a", sock, "/bin/sh", "-c", "echo \"agent $SSH_AGENT_PID\"; exec cat >/dev/null"],
                                              environment: ["PATH=/usr/local/bin:/usr/bin:/bin"],
                                              stdin: lifeline.read, log: report.write, dieWithThread: false)
        } catch {
            [lifeline.read, lifeline.write, report.read, report.write].forEach { close($0) }
            try? FileManager.default.removeItem(atPath: dir)
            throw BuildFailure("--ssh \(id): \(error)")
        }
        close(lifeline.read)
        close(report.write)
        // One line: `agent PID`, or what ssh-agent said before it failed (then end of file).
        var said = Data()
        var byte: UInt8 = 0
        while said.count < 4096, read(report.read, &byte, 1) == 1, byte != UInt8(ascii: "\n") { said.append(byte) }
        close(report.read)
        let line = String(decoding: said, as: UTF8.self)
        let pid = line.hasPrefix("agent ") ? pid_t(line.dropFirst(6)) ?? 0 : 0
        started.append((command, pid, lifeline.write, dir))
        guard pid > 0 else {
            throw BuildFailure("--ssh \(id): \(agent) did not start: \(line.isEmpty ? "no output" : line)")
        }
        let adding = Process()
        adding.executableURL = URL(fileURLWithPath: add)
        adding.arguments = ["-q"] + keys
        var env = ProcessInfo.processInfo.environment
        env["SSH_AUTH_SOCK"] = sock
        env.removeValue(forKey: "DISPLAY")   // never ask for a passphrase in a window
        adding.environment = env
        adding.standardInput = FileHandle.nullDevice
        let errors = Pipe()
        adding.standardOutput = FileHandle.nullDevice
        adding.standardError = errors
        try adding.run()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        adding.waitUntilExit()
        guard adding.terminationStatus == 0 else {
            throw BuildFailure("--ssh \(id): ssh-add could not load \(keys.joined(separator: ", ")) (a key with a passphrase needs an agent of your own: --ssh \(id)=$SSH_AUTH_SOCK): \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return sock
    }
}

/// The first executable named `name` on $PATH (then /usr/bin, /bin).
func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    for dir in path.split(separator: ":").map(String.init) + ["/usr/bin", "/bin"] where access(dir + "/" + name, X_OK) == 0 {
        return dir + "/" + name
    }
    return nil
}

#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild
import Foundation
import RBuildSystem

// The runtime's side of the id map: writing it for a new sandbox (directly, or through the
// setuid helpers newuidmap/newgidmap). The map itself is RBuildSystem's `IDMapping`.
extension IDMapping {
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
            // Both at once: each is a setuid program with a start-up of its own (the loader,
            // libaudit, libselinux), and the two maps do not depend on each other.
            let uids = try HelperRun(newuidmap!, pid: pid, lines: mapLines(forUIDs: true))
            let gids: HelperRun
            do {
                gids = try HelperRun(newgidmap!, pid: pid, lines: mapLines(forUIDs: false))
            } catch {
                _ = uids.program.finish()
                throw error
            }
            let uidResult = uids.finish()
            let gidResult = gids.finish()
            try uidResult.get()
            try gidResult.get()
        case .host:
            return   // no user namespace was made (`Sandbox.spawnAndWait` leaves it out)
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
        do {
            try writeAll(fd, Array(text.utf8))
        } catch let e as SystemError {
            throw RuntimeError(.idMapFailed, "writing '\(text.trimmingCharacters(in: .newlines))' to \(path) failed: \(e.text)")
        }
    }

    /// newuidmap or newgidmap started on the child's map.
    private struct HelperRun {
        let tool: String
        let args: [String]
        let program: StartedProgram

        init(_ tool: String, pid: pid_t, lines: [(inside: UInt32, outside: UInt32, count: UInt32)]) throws {
            var args = [String(pid)]
            for l in lines { args += [String(l.inside), String(l.outside), String(l.count)] }
            self.tool = tool
            self.args = args
            program = try StartedProgram(tool, args)
        }

        func finish() -> Result<Void, RuntimeError> {
            let status: Int32, output: String
            do {
                (status, output) = try program.finish().get()
            } catch {
                return .failure(error)
            }
            guard status != 0 else { return .success(()) }
            let toolName = (tool as NSString).lastPathComponent
            return .failure(RuntimeError(.idMapFailed,
                "\(toolName) \(args.joined(separator: " ")) failed (exit \(status)): \(output.trimmingCharacters(in: .whitespacesAndNewlines)); check /etc/subuid and /etc/subgid, or force single-id mode with RBUILD_IDMAP=single"))
        }
    }
}

/// Runs a host program to completion and returns its status and combined output.
func runProgram(_ path: String, _ args: [String]) throws -> (Int32, String) {
    try StartedProgram(path, args).finish().get()
}

/// A host program started with stdin from /dev/null and its stdout and stderr into one pipe.
struct StartedProgram {
    let path: String
    let pid: pid_t
    let output: Int32

    init(_ path: String, _ args: [String]) throws {
        // posix_spawn, not Foundation's Process: Process costs about 50 ms a launch here, and every
        // sandbox in subordinate mode runs two of these (newuidmap, newgidmap).
        var fds: [Int32] = [-1, -1]
        let piped = rb_pipe_cloexec(&fds)
        guard piped == 0 else {
            throw RuntimeError(.spawnFailed, "cannot run \(path): pipe: \(errnoText(-piped))")
        }
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
        self.path = path
        self.pid = pid
        output = fds[0]
    }

    /// Reads its output to the end and reaps it: its exit status (128+N for signal N) and output.
    func finish() -> Result<(Int32, String), RuntimeError> {
        // A read error ends the output early; the exit status still tells.
        let bytes = (try? readAll(output)) ?? []
        close(output)
        var status: Int32 = 0
        let w = rb_waitpid(pid, &status)
        guard w >= 0 else { return .failure(RuntimeError(.spawnFailed, "waiting for \(path) failed: \(errnoText(-w))")) }
        let code = rb_wifexited(status) != 0 ? rb_wexitstatus(status) : 128 + rb_wtermsig(status)
        return .success((code, String(decoding: bytes, as: UTF8.self)))
    }
}

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
            try runHelper(newuidmap!, pid: pid, lines: mapLines(forUIDs: true))
            try runHelper(newgidmap!, pid: pid, lines: mapLines(forUIDs: false))
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
    // A read error ends the output early; the exit status still tells.
    let output = (try? readAll(fds[0])) ?? []
    close(fds[0])
    var status: Int32 = 0
    let w = rb_waitpid(pid, &status)
    guard w >= 0 else { throw RuntimeError(.spawnFailed, "waiting for \(path) failed: \(errnoText(-w))") }
    let code = rb_wifexited(status) != 0 ? rb_wexitstatus(status) : 128 + rb_wtermsig(status)
    return (code, String(decoding: output, as: UTF8.self))
}

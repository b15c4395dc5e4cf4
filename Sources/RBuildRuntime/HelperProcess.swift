import CRBuildChild
import Foundation
import RBuildSystem

/// A long-running process rbuild starts beside its sandboxes (a network stack, an ssh agent)
/// through `rb_spawn_helper`: unlike Foundation's `Process`, it inherits no descriptor but the
/// ones named here (Process hands its child the end of a pipe that it watches for the child's
/// end, so a daemon the child leaves behind makes `waitUntilExit` wait for the daemon too), and
/// it can be made to die with the thread that started it.
public struct HelperProcess: Sendable {
    public let pid: pid_t

    /// Starts `path` with `arguments` (argv[0] included) and exactly `environment`. `fds[i]`
    /// becomes its descriptor 3+i, `stdin` its stdin and `log` its stdout and stderr (-1:
    /// /dev/null). `dieWithThread` kills it when the calling thread ends: only for a thread that
    /// waits for the helper. Throws `code` with the errno of the spawn or of the exec.
    public static func spawn(_ path: String, _ arguments: [String], environment: [String], fds: [Int32] = [],
                             stdin: Int32 = -1, log: Int32 = -1, dieWithThread: Bool,
                             code: RuntimeError.Code = .spawnFailed) throws -> HelperProcess {
        let arena = CArena()
        let pid = fds.withUnsafeBufferPointer { fds in
            rb_spawn_helper(arena.string(path), arena.stringArray(arguments), arena.stringArray(environment),
                            fds.baseAddress, Int32(fds.count), stdin, log, dieWithThread ? 1 : 0)
        }
        withExtendedLifetime(arena) {}
        guard pid > 0 else {
            throw RuntimeError(code, "cannot start \(path): \(errnoText(-pid))", cause: "errno \(-pid)")
        }
        return HelperProcess(pid: pid)
    }

    /// A pipe whose ends are both close-on-exec from the start, so that no child another thread
    /// spawns meanwhile holds them; hand an end to a helper through `fds`, `stdin` or `log`.
    public static func pipe(for what: String, code: RuntimeError.Code = .spawnFailed) throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        let rc = rb_pipe_cloexec(&fds)
        guard rc == 0 else { throw RuntimeError(code, "cannot start \(what): pipe: \(errnoText(-rc))") }
        return (fds[0], fds[1])
    }

    /// Waits for it to end; its wait status.
    @discardableResult
    public func wait() -> Int32 {
        var status: Int32 = 0
        _ = rb_waitpid(pid, &status)
        return status
    }
}

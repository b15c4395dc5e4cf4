#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild
import Foundation
import RBuildSystem

/// rbuild's own user namespace, as buildah and podman enter theirs (`buildah unshare`).
///
/// A RUN step leaves files owned by ids that exist only in the sandbox's map — apt's 0700
/// `/var/cache/apt/archives/partial` owned by `_apt`, 0600 files of other users — which the
/// invoking user cannot even read. Every later reader of such a tree (the layer diff, the copy
/// snapshotter, `COPY --from`, the local and tar exports, removal) has to act with the sandbox's
/// identity. Rather than routing each of those reads through a helper, the `rbuild` program
/// re-executes itself once, at start, in a user namespace with the same id map its sandboxes
/// use: there it is root over exactly those ids (CAP_DAC_READ_SEARCH, CAP_CHOWN, CAP_FOWNER
/// count for them and for nothing else on the host), and sandboxes become nested namespaces
/// that map those ids onto themselves. Files it creates still belong to the invoking user on
/// the host. An embedder's own program can do the same by calling `enter(arguments:)` first.
public enum UserNamespace {
    /// Set in the re-executed process: the outer mode and map sizes.
    static var outer: OuterNamespace? { OuterNamespace.current }
    static let variable = OuterNamespace.variable
    static let reasonVariable = OuterNamespace.reasonVariable

    /// Whether this process is the re-executed one.
    public static var isNested: Bool { outer != nil }

    /// Re-executes this program with `arguments` in a new user namespace holding the id map
    /// sandboxes use, waits for it and exits with its status (signals are passed on). Returns
    /// without doing anything when this process already is that one, when rbuild runs as real
    /// root (it is root over every id already), when `RBUILD_USERNS=off`, or when no user
    /// namespace can be made here: the caller then goes on as before.
    ///
    /// `handOver`: fds (not close-on-exec) that the new process takes over: closed here once it
    /// exists, so that its closing them is their end (a pipe's reader sees EOF).
    public static func enter(arguments: [String], handOver: [Int32] = []) {
        if let outer {
            // Read once (above); nothing this process starts may take itself for the inner one.
            unsetenv(variable)
            unsetenv(reasonVariable)
            // Die with the outer process, as a sandbox does: `kill -9 rbuild` must not leave
            // a builder running. (A parent gone before this line is caught by the ppid test.)
            _ = rb_die_with_parent()
            if getppid() != outer.parent { exit(1) }
            return
        }
        let env = ProcessInfo.processInfo.environment
        guard getuid() != 0, env[variable] != "off" else { return }
        let force = env["RBUILD_IDMAP"].flatMap(IDMappingMode.init(rawValue:))
        let mapping = IDMapping.detect(force: force)
        guard mapping.mode != .root else { return }

        var vars = env
        // Without HOME (cron, `env -i`) the inner process, uid 0 in the namespace, would take
        // root's home from the user database: another state dir, caches and credentials than this
        // process's. It gets this user's.
        if vars["HOME"] == nil { vars["HOME"] = homeDirectory() }
        vars[variable] = "\(mapping.mode.rawValue):\(mapping.maxInsideUID):\(mapping.maxInsideGID):\(getpid())"
        vars[reasonVariable] = mapping.reason
        let arena = CArena()
        var plan = rb_plan()
        plan.stdio = (-1, -1, -1)
        plan.probe = Int32(RB_TASK_EXEC.rawValue)
        plan.clone_flags = UInt(RB_CLONE_NEWUSER.rawValue)
        plan.argv = arena.stringArray(["/proc/self/exe"] + arguments.dropFirst())
        plan.envp = arena.stringArray(vars.map { "\($0.key)=\($0.value)" })
        let outcome: Sandbox.Outcome
        do {
            outcome = try Sandbox.spawnAndWait(&plan, mapping: mapping, forwardSignals: true,
                                               spawned: { for fd in handOver { close(fd) } })
        } catch {
            return   // no user namespace here (a container's seccomp profile, say): run as before
        }
        withExtendedLifetime(arena) {}
        if outcome.report != nil { return }   // the exec itself failed: run as before
        exit(outcome.exitCode)
    }
}

#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild
import Foundation
import RBuildSystem

/// Ownership work done from a user namespace with the sandboxes' id map (see RBuildSystem's
/// `Ownership`): a helper is cloned into one (CRBuildChild's RB_TASK_OWNERS and RB_TASK_RECLAIM).
extension Ownership {
    /// chown (and chmod, since chown clears set-id bits) each record's path, resolved inside
    /// `root` (never through a symlink out of it), from a user namespace with `mapping`.
    public static func apply(_ records: [Record], under root: String, mapping: IDMapping) throws {
        guard !records.isEmpty else { return }
        let fd = rb_memfd("rbuild-owners")
        guard fd >= 0 else { throw RuntimeError(.spawnFailed, "memfd_create: \(errnoText(-fd))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        for r in records {
            var rec = rb_owner_record(uid: r.uid, gid: r.gid, mode: r.mode, path_len: UInt32(r.path.utf8.count))
            withUnsafeBytes(of: &rec) { bytes += $0 }
            bytes += Array(r.path.utf8)
        }
        do {
            try writeAll(fd, bytes)
        } catch let e as SystemError {
            throw RuntimeError(.spawnFailed, "cannot write the ownership list: \(e.text)")
        }
        guard lseek(fd, 0, SEEK_SET) == 0 else {
            throw RuntimeError(.spawnFailed, "cannot write the ownership list: \(errnoText(errno))")
        }
        try run(.owners, root: root, fd: fd, mapping: mapping) { item in
            item >= 0 && item < records.count ? "setting the owner of \(root)/\(records[item].path) to \(records[item].uid):\(records[item].gid)" : "setting owners under \(root)"
        }
    }

    /// Gives every entry under `root` back to 0:0 inside (the invoking user outside) and makes
    /// directories writable, so the tree can be removed.
    public static func reclaim(_ root: String, mapping: IDMapping) throws {
        try run(.reclaim, root: root, fd: -1, mapping: mapping) { _ in "taking back \(root)" }
    }

    enum Task { case owners, reclaim }

    static func run(_ task: Task, root: String, fd: Int32, mapping: IDMapping, what: (Int) -> String) throws {
        let arena = CArena()
        var plan = rb_plan()
        plan.stdio = (-1, -1, -1)
        plan.probe = Int32(task == .owners ? RB_TASK_OWNERS.rawValue : RB_TASK_RECLAIM.rawValue)
        plan.clone_flags = UInt(RB_CLONE_NEWUSER.rawValue)
        plan.task_root = arena.string(root)
        plan.task_fd = fd
        let outcome = try Sandbox.spawnAndWait(&plan, mapping: mapping)
        withExtendedLifetime(arena) {}
        if let r = outcome.report {
            throw RuntimeError(.spawnFailed, "\(what(Int(r.item))): \(errnoText(r.err))")
        }
        guard outcome.exitCode == 0 else {
            throw RuntimeError(.spawnFailed, "\(what(-1)): the helper exited with status \(outcome.exitCode)")
        }
    }
}

/// The runtime's `UserNamespaceTasks`: what Snapshots needs done in the sandboxes' user
/// namespace, done with the same helpers and probes the sandboxes use.
public struct SandboxTasks: UserNamespaceTasks {
    public let mapping: IDMapping

    public init(mapping: IDMapping = IDMapping.detect()) {
        self.mapping = mapping
    }

    public func setOwners(_ records: [Ownership.Record], under root: String) throws {
        try Ownership.apply(records, under: root, mapping: mapping)
    }

    public func reclaim(_ root: String) throws {
        try Ownership.reclaim(root, mapping: mapping)
    }

    public func overlayMountProblem(in directory: String?) -> String? {
        HostReport.probeOverlayInUserNamespace(in: directory)
    }
}

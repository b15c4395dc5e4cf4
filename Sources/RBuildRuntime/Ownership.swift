#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild
import Foundation

/// Ownership work that needs the sandbox's user namespace: an unprivileged user can neither
/// give a file a subordinate id nor delete a directory that one owns, but root inside a user
/// namespace with that id map can do both (CAP_CHOWN over the ids it maps).
public enum Ownership {
    /// One entry to own by `uid:gid` (ids inside the sandbox), with its permission bits.
    public struct Record: Sendable {
        public var path: String
        public var uid: UInt32
        public var gid: UInt32
        public var mode: UInt32
        public init(path: String, uid: UInt32, gid: UInt32, mode: UInt32) {
            self.path = path
            self.uid = uid
            self.gid = gid
            self.mode = mode
        }
    }

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
        guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == bytes.count, lseek(fd, 0, SEEK_SET) == 0 else {
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

extension IDMapping {
    /// The id inside the sandbox that a host id stands for; nil when the map has none.
    public func insideID(host: UInt32, uid: Bool) -> UInt32? {
        for l in mapLines(forUIDs: uid) where host >= l.outside && host - l.outside < l.count {
            return l.inside + (host - l.outside)
        }
        return nil
    }
}

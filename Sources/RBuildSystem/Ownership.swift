/// Owners of files made outside the sandbox. An unprivileged user can neither give a file a
/// subordinate id nor delete a directory that one owns; root inside a user namespace with the
/// sandboxes' id map can do both (CAP_CHOWN over the ids it maps). The records are plain data;
/// RBuildRuntime applies them (`Ownership.apply`, `Ownership.reclaim`), and the layers below it
/// reach that through `UserNamespaceTasks`.
public enum Ownership {
    /// One entry to own by `uid:gid` (ids inside the sandbox), with its permission bits.
    public struct Record: Sendable, Equatable {
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
}

/// Work on a tree that needs the sandboxes' user namespace, done for a layer that may not start
/// processes itself (Snapshots): RBuildRuntime's `SandboxTasks` does it with a helper cloned
/// through the C child. The embedding program (or RBuild) picks the implementation and hands it
/// down, so Snapshots never imports the runtime.
public protocol UserNamespaceTasks: Sendable {
    /// The id map the tasks (and the sandboxes) run with.
    var mapping: IDMapping { get }
    /// chown (and chmod, since chown clears set-id bits) each record's path, resolved inside
    /// `root` (never through a symlink out of it).
    func setOwners(_ records: [Ownership.Record], under root: String) throws
    /// Gives every entry under `root` back to the invoking user and makes directories writable,
    /// so that the tree can be removed.
    func reclaim(_ root: String) throws
    /// nil when kernel overlayfs can be mounted (with userxattr) in a new user namespace here,
    /// with its upper directory in `directory` (nil: a temporary directory); else why not.
    func overlayMountProblem(in directory: String?) -> String?
}

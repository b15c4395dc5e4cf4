import Foundation

/// Where everything lives in a state directory (`--root`; by default `$XDG_DATA_HOME/rbuild`).
/// Every path under the state root is named here and nowhere else, so that `prune`, `check` and
/// a reader of the code agree on what the directory holds:
///
/// ```
/// blobs/sha256/<hex>     the content store (ContentStore), written via ingest/
/// blobs/recipes/<hex>    layers kept only as a snapshot's directory (LayerRecipe): how to pack
///                        blob <hex> again when an export, push or cache export asks for it
/// ingest/                the content store's temp files (renamed into blobs/ once verified)
/// images.json            named local images (ImageStore), replaced under images.lock
/// images.lock
/// cache.db               the build cache index (SQLite, WAL)
/// snapshots/<kind>/      one directory per snapshotter kind (overlay, fuse-overlayfs, copy)
/// tmp/                   staging of builds and exports; what killed builds left is pruned
/// run/                   scratch directories of `rbuild run`
/// git/<key>/             bare repositories of git sources (GitRepositories), by the sha256 of
///                        their URL; `<key>.lock` the lock their fetchers hold
/// cache-mounts/<key>/     RUN --mount=type=cache directories (CacheMounts): `id` names the
///                        mount, `<n>/` is its n-th copy (more than one with sharing=private),
///                        `<n>.lock` the lock its users hold
/// history/<id>.json      build records (`rbuild history`), each replaced whole by rename;
/// history/<id>.log.gz    …and the progress events of each
/// ```
public struct StateLayout: Sendable, Equatable {
    /// The state directory itself. Kept as given: callers that hand it to sandboxes make it
    /// absolute first (`absolutePath`).
    public let root: String

    public init(root: String) {
        self.root = root
    }

    /// `$XDG_DATA_HOME/rbuild`, else `~/.local/share/rbuild`.
    public static var defaultRoot: String {
        let env = ProcessInfo.processInfo.environment
        if let xdg = env["XDG_DATA_HOME"], xdg.hasPrefix("/") { return xdg + "/rbuild" }
        let home = homeDirectory()
        return home + "/.local/share/rbuild"
    }

    /// The content store's blobs, by algorithm: `blobs/sha256/<hex>`.
    public var blobs: String { root + "/blobs" }
    public var sha256Blobs: String { blobs + "/sha256" }
    /// Recipes of layers whose bytes are kept as a snapshot directory, not as a blob.
    public var layerRecipes: String { blobs + "/recipes" }
    /// The content store's temp files.
    public var ingest: String { root + "/ingest" }
    /// Named local images, and the lock their writers hold.
    public var images: String { root + "/images.json" }
    public var imagesLock: String { root + "/images.lock" }
    /// The build cache index.
    public var cacheIndex: String { root + "/cache.db" }
    /// Every snapshotter's directory.
    public var snapshots: String { root + "/snapshots" }
    /// The directory of one snapshotter kind (`overlay`, `fuse-overlayfs`, `copy`).
    public func snapshots(kind: String) -> String { snapshots + "/" + kind }
    /// Staging for builds and exports.
    public var tmp: String { root + "/tmp" }
    /// Scratch directories of `rbuild run`.
    public var run: String { root + "/run" }
    /// The directories of cache mounts (RUN --mount=type=cache), one per id.
    public var cacheMounts: String { root + "/cache-mounts" }
    /// Build records and their logs (`rbuild history`).
    public var history: String { root + "/history" }
    /// The repositories git sources are fetched into, one per remote URL.
    public var git: String { root + "/git" }
}

/// `$HOME`, else the home directory the user database gives this user (cron and `env -i` run
/// without HOME). rbuild's user namespace passes it on (UserNamespace.enter): in there, uid 0
/// would find root's.
public func homeDirectory() -> String {
    ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
}

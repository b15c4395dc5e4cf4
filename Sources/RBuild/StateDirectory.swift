import Foundation
@_exported import RBuildOCI

/// rbuild's state directory: blobs, named images, (later) snapshots and the cache index.
public enum StateDirectory {
    /// `$XDG_DATA_HOME/rbuild`, else `~/.local/share/rbuild`.
    public static var defaultPath: String {
        let env = ProcessInfo.processInfo.environment
        if let xdg = env["XDG_DATA_HOME"], xdg.hasPrefix("/") { return xdg + "/rbuild" }
        let home = env["HOME"] ?? NSHomeDirectory()
        return home + "/.local/share/rbuild"
    }

    /// Opens (creating) the image store in `path` or the default state directory.
    /// A relative path is made absolute first: sandboxes (and the fuse-overlayfs they start)
    /// see the layer paths from another working directory.
    public static func open(_ path: String?) throws -> ImageStore {
        var root = path ?? defaultPath
        if !root.hasPrefix("/") { root = FileManager.default.currentDirectoryPath + "/" + root }
        return try ImageStore(root: root)
    }
}

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
    public static func open(_ path: String?) throws -> ImageStore {
        try ImageStore(root: path ?? defaultPath)
    }
}

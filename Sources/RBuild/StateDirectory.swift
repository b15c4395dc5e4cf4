import Foundation
import RBuildDockerfile
import RBuildExporters
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSnapshots
import RBuildSolver
import RBuildSystem

/// rbuild's state directory: blobs, named images, snapshots and the cache index (laid out as
/// `StateLayout` says).
public enum StateDirectory {
    /// `$XDG_DATA_HOME/rbuild`, else `~/.local/share/rbuild`.
    public static var defaultPath: String { StateLayout.defaultRoot }

    /// Opens (creating) the image store in `path` or the default state directory.
    public static func open(_ path: String?) throws -> ImageStore {
        try ImageStore(root: path ?? defaultPath)
    }
}

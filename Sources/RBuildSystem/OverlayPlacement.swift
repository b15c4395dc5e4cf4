#if canImport(Glibc)
import Glibc
#endif
import CRBuildSys
import Foundation

/// Whether `path` lies on an overlayfs (statfs's f_type, OVERLAYFS_SUPER_MAGIC).
public func isOnOverlayfs(_ path: String) -> Bool {
    rb_fs_type(path) == 0x794c7630
}

/// Where kernel overlayfs snapshots keep their upper and work directories. overlayfs cannot use
/// an overlayfs as its upper layer, and a CI container's root (where a state dir under $HOME
/// lands) is one: the upper directories then go to the first scratch directory off overlayfs
/// with room (TMPDIR, /tmp, /var/tmp, XDG_RUNTIME_DIR: a volume or tmpfs the job mounted), and a
/// committed snapshot is copied back into the state dir.
public enum OverlayPlacement {
    /// The least free space a scratch directory needs to take a build step's changes.
    public static let minimumFree: UInt64 = 1 << 30

    /// nil: in the state dir itself (it is no overlayfs). Else the scratch directory to use, or
    /// the failure saying what to mount where.
    public static func scratch(forStateDirectory stateDirectory: String) -> Swift.Result<String, PlacementError>? {
        guard isOnOverlayfs(stateDirectory) else { return nil }
        let env = ProcessInfo.processInfo.environment
        let candidates = [env["TMPDIR"], "/tmp", "/var/tmp", env["XDG_RUNTIME_DIR"]].compactMap { $0 }.filter { !$0.isEmpty }
        for dir in candidates where access(dir, W_OK) == 0 && !isOnOverlayfs(dir) {
            var st = statvfs()
            guard statvfs(dir, &st) == 0, UInt64(st.f_bavail) * UInt64(st.f_frsize) >= minimumFree else { continue }
            return .success(dir)
        }
        return .failure(PlacementError(message: "the state directory \(stateDirectory) is on an overlayfs (a container's root), which overlayfs cannot take upper directories from, and none of \(candidates.joined(separator: ", ")) is a writable directory off overlayfs with 1 GiB free: mount a volume or tmpfs at the state directory (--root) or at TMPDIR"))
    }

    public struct PlacementError: Error, Sendable {
        public var message: String
    }
}

import Foundation

/// The root filesystem a sandbox runs on, as a snapshotter describes it: a directory, or an
/// overlay of snapshot directories mounted on it inside the sandbox's user namespace. Snapshots
/// returns it; RBuildRuntime's `SandboxSpec.root` takes it.
public struct RootMounts: Sendable, Equatable {
    /// Absolute host path of the root; with `overlay`, the empty directory it is mounted on
    /// (inside the sandbox's mount namespace only).
    public var rootfs: String
    public var overlay: OverlayRoot?

    public init(rootfs: String, overlay: OverlayRoot? = nil) {
        self.rootfs = rootfs
        self.overlay = overlay
    }
}

/// An overlayfs root: read-only lower directories (topmost first) and, for a writable root, an
/// upper and a work directory on one filesystem. Changes land in `upperDir`, in overlayfs's
/// format (whiteouts as 0/0 character devices, opaque directories marked with
/// `user.overlay.opaque`).
public struct OverlayRoot: Sendable, Equatable {
    public var lowerDirs: [String]
    public var upperDir: String?
    public var workDir: String?
    /// Set by `throwaway`: upper and work live on a tmpfs mounted here inside the sandbox.
    public var tmpfsDir: String?
    /// The `fuse-overlayfs` program to serve the root with, instead of the kernel's overlayfs
    /// (for kernels or filesystems where an overlay cannot be mounted in a user namespace).
    public var fuseProgram: String?

    public init(lowerDirs: [String], upperDir: String? = nil, workDir: String? = nil) {
        self.lowerDirs = lowerDirs
        self.upperDir = upperDir
        self.workDir = workDir
    }

    /// A writable root whose changes vanish with the sandbox: upper and work are on a tmpfs
    /// mounted on `scratch` (an empty directory) in the sandbox's mount namespace only, so nothing
    /// is left to clean up — not even files a non-root USER created under subordinate ids.
    public static func throwaway(lowerDirs: [String], scratch: String) -> OverlayRoot {
        var o = OverlayRoot(lowerDirs: lowerDirs, upperDir: scratch + "/upper", workDir: scratch + "/work")
        o.tmpfsDir = scratch
        return o
    }

    /// The legacy `lowerdir=` value: colon-separated, with `\` and `:` in names escaped.
    package var joinedLowerDirs: String {
        lowerDirs.map { $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ":", with: "\\:") }
            .joined(separator: ":")
    }
}

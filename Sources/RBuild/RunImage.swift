import Foundation
import RBuildDockerfile
import RBuildExporters
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSnapshots
import RBuildSolver
import RBuildSystem

/// The root of a local image in a snapshotter: each layer applied once (shared by every image
/// that has it), the chain returned.
public func snapshot(ofImage manifest: Manifest, config: ImageConfig, name: String, store: ImageStore,
                     snapshotter: any Snapshotter) throws -> Snapshot {
    try config.checkDiffIDCount(layers: manifest.layers.count, name)
    return try snapshot(layers: manifest.layers, diffIDs: config.rootfs.diff_ids, store: store, snapshotter: snapshotter)
}

/// The snapshot of `layers` (blobs in `store`, with their diffIDs) applied in order.
public func snapshot(layers: [Descriptor], diffIDs: [Digest], store: ImageStore, snapshotter: any Snapshotter) throws -> Snapshot {
    var snap = Snapshot(chainID: nil, directories: [])
    for (layer, diffID) in zip(layers, diffIDs) {
        snap = try snapshotter.apply(layer: store.content.blob(layer), diffID: diffID, name: layer.digest.description, on: snap)
    }
    return snap
}

/// A sandbox for running a local image, as `docker run IMAGE [CMD…]` would, and what to throw
/// away after it ran.
public struct ImageRun {
    public var spec: SandboxSpec
    let snapshotter: any Snapshotter
    let active: ActiveSnapshot?

    /// Removes the run's writable snapshot.
    public func cleanUp() {
        if let active { try? snapshotter.remove(active) }
    }
}

/// Builds the sandbox for running a local image: the layers unpacked once into the snapshotter
/// and stacked under a writable layer that is thrown away (for the overlay kinds, on a tmpfs
/// inside the sandbox; for copy, a copy removed by `cleanUp`), and the image's ENTRYPOINT, CMD,
/// Env, WorkingDir and User applied.
public func prepareImageRun(_ name: String, platform: Platform?, store: ImageStore, command: [String],
                            snapshotter: any Snapshotter, scratch: String) throws -> ImageRun {
    let full = try ImageStore.normalise(name)
    guard let top = try store.lookup(full) else {
        throw OCIError(.notFound, "no such image: \(full) (see `rbuild images`; `rbuild import` or `rbuild load` make one)")
    }
    let (manifest, config) = try namingBlobErrors("cannot run \(full)") {
        let (_, manifest) = try store.manifest(of: top, platform: platform)
        return (manifest, try store.config(of: manifest))
    }
    let c = config.config
    let argv = (c?.Entrypoint ?? []) + (command.isEmpty ? (c?.Cmd ?? []) : command)
    guard !argv.isEmpty else {
        throw OCIError(.invalidArgument, "no command given, and \(full) has no ENTRYPOINT or CMD: rbuild run \(name) -- CMD…")
    }
    let snap = try namingBlobErrors("cannot run \(full)") {
        try snapshot(ofImage: manifest, config: config, name: full, store: store, snapshotter: snapshotter)
    }
    let (root, active) = try snapshotter.throwawayMounts(snap, scratch: scratch)
    var spec = SandboxSpec(root: root, argv: argv)
    let view = SnapshotView(snap)
    spec.readRootFile = { try view.readFile($0) }
    spec.env = c?.Env ?? []
    if let wd = c?.WorkingDir, !wd.isEmpty { spec.workdir = wd }
    if let user = c?.User, !user.isEmpty { spec.user = try UserSpec.parse(user) }
    if let arch = Architecture(platform: config.platform) { spec.architecture = arch }
    return ImageRun(spec: spec, snapshotter: snapshotter, active: active)
}

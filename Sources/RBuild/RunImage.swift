import Foundation
import RBuildSnapshots

/// Builds the sandbox for running a local image, as `docker run IMAGE [CMD…]` would: the layers
/// unpacked once into snapshots and stacked as an overlay whose writable layer is thrown away,
/// and the image's ENTRYPOINT, CMD, Env, WorkingDir and User applied.
public func sandboxSpec(forImage name: String, platform: Platform?, store: ImageStore,
                        command: [String], scratch: String) throws -> SandboxSpec {
    let full = try ImageStore.normalise(name)
    guard let top = try store.lookup(full) else {
        throw OCIError(.notFound, "no such image: \(full) (see `rbuild images`; `rbuild import` or `rbuild load` make one)")
    }
    let (_, manifest) = try store.manifest(of: top, platform: platform)
    let config = try decodeJSON(ImageConfig.self, from: try store.content.read(manifest.config.digest), what: "config of \(full)")
    guard manifest.layers.count == config.rootfs.diff_ids.count else {
        throw OCIError(.corruptBlob, "\(full): \(manifest.layers.count) layers but \(config.rootfs.diff_ids.count) diff_ids")
    }
    let snapshots = try SnapshotStore(stateDirectory: store.root)
    var lowers: [String] = []
    for (layer, diffID) in zip(manifest.layers, config.rootfs.diff_ids) {
        lowers.append(try snapshots.directory(for: layer, diffID: diffID, content: store.content))
    }
    if lowers.isEmpty {
        // An image without layers (FROM scratch and nothing else) is an empty root.
        let empty = scratch + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        lowers = [empty]
    }
    let c = config.config
    let argv = (c?.Entrypoint ?? []) + (command.isEmpty ? (c?.Cmd ?? []) : command)
    guard !argv.isEmpty else {
        throw OCIError(.invalidArgument, "no command given, and \(full) has no ENTRYPOINT or CMD: rbuild run \(name) -- CMD…")
    }
    let merged = scratch + "/root", volatile = scratch + "/rw"
    for d in [merged, volatile] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
    var spec = SandboxSpec(rootfs: merged, argv: argv)
    spec.overlay = .throwaway(lowerDirs: lowers.reversed(), scratch: volatile)
    spec.env = c?.Env ?? []
    if let wd = c?.WorkingDir, !wd.isEmpty { spec.workdir = wd }
    if let user = c?.User, !user.isEmpty { spec.user = try UserSpec.parse(user) }
    let p = config.platform
    if let arch = Architecture(platform: p.description) { spec.architecture = arch }
    return spec
}

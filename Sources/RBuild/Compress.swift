import Foundation
import RBuildDockerfile
import RBuildExporters
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSnapshots
import RBuildSolver
import RBuildSystem

/// The image `top` (a manifest, or an index of them) with every layer compressed as
/// `compression`: new manifests (and index) where a layer changed, the same descriptor where
/// none did. Each conversion is remembered in `cache` (when given), so a layer is compressed once
/// per compression and level.
public func compressedImage(_ top: Descriptor, compression: Compression, level: Int?, store: ImageStore,
                            cache: CacheIndex?) throws -> Descriptor {
    if MediaType.isIndex(top.mediaType) {
        var index = try decodeIndex(try store.content.read(top), as: top)
        let converted = try index.manifests.map { try compressedImage($0, compression: compression, level: level, store: store, cache: cache) }
        if converted == index.manifests { return top }
        index.manifests = converted
        let bytes = try canonicalJSON(index)
        return Descriptor(mediaType: top.mediaType, digest: try store.content.put(bytes), size: Int64(bytes.count),
                          annotations: top.annotations, platform: top.platform)
    }
    // An attestation's layers are in-toto statements, not tars: they travel as they are, as do
    // entries that are not image manifests at all.
    if top.isAttestation || !MediaType.isManifest(top.mediaType) { return top }
    var manifest = try decodeManifest(try store.content.read(top), as: top)
    var layers: [Descriptor] = []
    for layer in manifest.layers {
        guard MediaType.isLayer(layer.mediaType) else {
            layers.append(layer)
            continue
        }
        layers.append(try compressedLayer(layer, compression: compression, level: level, store: store.content, cache: cache))
    }
    if layers == manifest.layers { return top }
    manifest.layers = layers
    let bytes = try canonicalJSON(manifest)
    return Descriptor(mediaType: MediaType.ociManifest, digest: try store.content.put(bytes), size: Int64(bytes.count),
                      annotations: top.annotations, platform: top.platform)
}

extension ImageStore {
    /// `rbuild save`: the image `name` (one platform of it with `platform`) written to `target`
    /// with its layers compressed as `compression` — gzip unless asked otherwise, as buildx's
    /// exports — each layer converted once and the conversion remembered in the cache index, so
    /// a second save sends the same blobs without compressing again.
    public func save(_ name: String, platform: Platform?, to target: ExportTarget, compression: Compression = .gzip,
                     level: Int? = nil, sourceDateEpoch: Int64? = LayerOptions.environmentEpoch) throws {
        try save(name, platform: platform, to: target, sourceDateEpoch: sourceDateEpoch) { top in
            try compressedImage(top, compression: compression, level: level, store: self, cache: try CacheIndex(path: layout.cacheIndex))
        }
    }
}

import Foundation
import RBuildOCI
import RBuildRegistry
import RBuildSystem

/// `rbuild imagetools`: indexes made and read in a registry, as `docker buildx imagetools`.
public enum Imagetools {
    /// One entry of an image in a registry: a manifest with its platform (attestation manifests
    /// keep their `unknown/unknown` and annotations).
    struct Entry {
        var source: Reference
        var descriptor: Descriptor
        var bytes: [UInt8]
    }

    /// The manifests `ref` names: an index's entries, or the one manifest (its platform read
    /// from its config).
    static func entries(_ ref: Reference, client: RegistryClient, store: ImageStore) throws -> [Entry] {
        let (top, bytes) = try client.manifest(ref.repository, ref.manifestReference, expected: ref.digest)
        if MediaType.isIndex(top.mediaType) {
            let index = try decodeIndex(bytes, as: top, from: ref.description)
            return try index.manifests.map { d in
                let b = try client.manifest(ref.repository, d.digest.description, expected: d.digest).1
                return Entry(source: ref, descriptor: d, bytes: b)
            }
        }
        let manifest = try decodeManifest(bytes, as: top, from: ref.description)
        try client.fetchBlob(ref.repository, manifest.config, into: store.content)
        let config = try decodeJSON(ImageConfig.self, from: try store.content.read(manifest.config), what: "config of \(ref)")
        var d = top
        d.platform = Platform(os: config.os, architecture: config.architecture, variant: config.variant)
        return [Entry(source: ref, descriptor: d, bytes: bytes)]
    }

    /// Makes an index of every manifest of `sources` (images or indexes in registries) and pushes
    /// it to `target` (unless `dryRun`). Manifests from another repository are copied into the
    /// target's first (their blobs mounted across repositories of one registry, else passed
    /// through `store`). Returns the index and its bytes.
    public static func create(target: Reference, sources: [Reference], store: ImageStore, annotations: [String: String] = [:],
                              dryRun: Bool = false, progress: (@Sendable (String) -> Void)? = nil) throws -> (Descriptor, [UInt8]) {
        guard !sources.isEmpty else { throw RegistryError("imagetools create needs at least one source image") }
        let targetClient = try RegistryClient(registry: target)
        var manifests: [Descriptor] = []
        var seenPlatforms: [String: Reference] = [:]
        for source in sources {
            let client = source.registry == target.registry ? targetClient : try RegistryClient(registry: source)
            for e in try entries(source, client: client, store: store) {
                guard !manifests.contains(where: { $0.digest == e.descriptor.digest }) else { continue }
                if let p = e.descriptor.platform, !e.descriptor.isAttestation {
                    if let other = seenPlatforms[p.description] {
                        throw RegistryError("imagetools create: \(source) and \(other) both have a \(p) image; an index holds one per platform")
                    }
                    seenPlatforms[p.description] = source
                }
                manifests.append(e.descriptor)
                if dryRun || (source.registry == target.registry && source.repository == target.repository) { continue }
                try copy(e, from: client, to: target, targetClient: targetClient, store: store, progress: progress)
            }
        }
        let index = Index(mediaType: MediaType.ociIndex, manifests: manifests, annotations: annotations.isEmpty ? nil : annotations)
        let bytes = try canonicalJSON(index)
        let d = Descriptor(mediaType: MediaType.ociIndex, digest: Digest.of(bytes), size: Int64(bytes.count))
        if !dryRun {
            try targetClient.pushManifest(target.repository, target.digest?.description ?? target.tag ?? "latest", bytes, mediaType: MediaType.ociIndex)
            progress?("pushed \(target) \(d.digest)")
        }
        return (d, bytes)
    }

    /// One manifest and its blobs into the target's repository.
    static func copy(_ e: Entry, from client: RegistryClient, to target: Reference, targetClient: RegistryClient, store: ImageStore,
                     progress: (@Sendable (String) -> Void)?) throws {
        guard MediaType.isManifest(e.descriptor.mediaType) else {
            throw RegistryError("imagetools create: \(e.source) holds a nested index (\(e.descriptor.digest)); name its images instead")
        }
        let manifest = try decodeManifest(e.bytes, as: e.descriptor, from: e.source.description)
        let sameRegistry = e.source.registry == target.registry
        for blob in [manifest.config] + manifest.layers {
            if try targetClient.blobExists(target.repository, blob.digest) { continue }
            // Lent by the source repository when the registry can (the blob never leaves it);
            // else through this store.
            if sameRegistry, !store.content.contains(blob.digest),
               (try? targetClient.pushBlob(target.repository, blob, from: store.content.blob(blob), mountFrom: e.source.repository)) != nil {
                progress?("mounted \(blob.digest) from \(e.source.repository)")
                continue
            }
            try client.fetchBlob(e.source.repository, blob, into: store.content)
            try targetClient.pushBlob(target.repository, blob, from: store.content.blob(blob))
            progress?("copied \(blob.digest) from \(e.source)")
        }
        try targetClient.pushManifest(target.repository, e.descriptor.digest.description, e.bytes, mediaType: e.descriptor.mediaType)
    }

    /// What `ref` is: its top descriptor and raw bytes, and for an index each entry's.
    public static func inspect(_ ref: Reference) throws -> (top: Descriptor, raw: [UInt8], entries: [Descriptor]) {
        let client = try RegistryClient(registry: ref)
        let (top, bytes) = try client.manifest(ref.repository, ref.manifestReference, expected: ref.digest)
        guard MediaType.isIndex(top.mediaType) else { return (top, bytes, []) }
        return (top, bytes, try decodeIndex(bytes, as: top, from: ref.description).manifests)
    }
}

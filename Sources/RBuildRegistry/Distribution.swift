import Foundation
import RBuildSystem
import RBuildOCI

/// Pulling and pushing whole images between a registry and the local store.
public enum Distribution {
    final class FirstError: @unchecked Sendable { var error: Error?; let lock = NSLock() }

    /// Runs `work` over `items`, at most `limit` at once, each on a thread of its own (the
    /// requests block, and dispatch has few workers to spare on a small machine). The first error
    /// is thrown once all have stopped.
    package static func concurrently(_ items: [Descriptor], limit: Int = 4, _ work: @escaping @Sendable (Descriptor) throws -> Void) throws {
        let state = FirstError()
        let slots = DispatchSemaphore(value: limit)
        let group = DispatchGroup()
        for item in items {
            slots.wait()
            state.lock.lock()
            let failed = state.error != nil
            state.lock.unlock()
            if failed { slots.signal(); break }
            group.enter()
            Thread.detachNewThread {
                defer { slots.signal(); group.leave() }
                do { try work(item) } catch {
                    state.lock.lock()
                    if state.error == nil { state.error = error }
                    state.lock.unlock()
                }
            }
        }
        group.wait()
        if let e = state.error { throw e }
    }

    /// Pulls `ref` (the host's platform of an index, or `platforms`) into `store`, every blob
    /// verified before it is kept, and names it `ref`. Indexes are taken as registries serve
    /// them: OCI indexes and Docker manifest lists, nested indexes, entries whose platform only
    /// their config names, attestation manifests (never chosen as a platform). Each wanted
    /// platform gets its best match (`PlatformMatcher`: `arm64` takes `arm64/v8`). Every manifest
    /// and index goes through `Document.decode` (its kind must be what its descriptor says;
    /// indexes at most `DocumentLimits.maxDepth` deep, each read no further than 4 MiB), and a
    /// config must list one diff_id per layer before any layer is fetched. Returns what was
    /// stored: the platform's manifest; the registry's own index, attestations and all, when
    /// every runnable platform was asked for; else an index of those that were.
    public static func pull(_ ref: Reference, platforms: [Platform]? = nil, store: ImageStore,
                            client given: RegistryClient? = nil, progress: (@Sendable (String) -> Void)? = nil) throws -> Descriptor {
        let client = try given ?? RegistryClient(registry: ref)
        let repo = ref.repository
        let (top, bytes) = try client.manifest(repo, ref.manifestReference, expected: ref.digest)
        var documents: [Digest: [UInt8]] = [top.digest: bytes]
        /// A manifest or index an index names, by digest: its size as its descriptor says.
        func document(_ d: Descriptor) throws -> [UInt8] {
            if let b = documents[d.digest] { return b }
            if d.size > DocumentLimits.maxSize {
                throw RegistryError("\(ref): the descriptor of \(d.digest) says \(d.size) bytes, over the \(DocumentLimits.maxSize >> 20) MiB limit for a manifest or index: refused")
            }
            let b = try client.manifest(repo, d.digest.description, expected: d.digest).1
            guard b.count == d.size else {
                throw RegistryError("\(ref): \(d.digest) has \(b.count) bytes, but its descriptor says \(d.size): refused")
            }
            documents[d.digest] = b
            return b
        }
        var manifests: [Descriptor] = [top]
        var indexes: [Descriptor] = []
        var stored = top
        let source = ref.description
        /// A manifest's config, fetched and decoded.
        func config(_ manifest: Manifest) throws -> ImageConfig {
            if manifest.config.size > DocumentLimits.maxSize {
                throw RegistryError("\(ref): config \(manifest.config.digest) is \(manifest.config.size) bytes by its descriptor, over the \(DocumentLimits.maxSize >> 20) MiB limit: refused")
            }
            try client.fetchBlob(repo, manifest.config, into: store.content)
            return try decodeJSON(ImageConfig.self, from: try store.content.read(manifest.config),
                                  what: "config \(manifest.config.digest) of \(ref)")
        }
        if MediaType.isIndex(top.mediaType) {
            let entries = try indexEntries(under: top, from: source, read: document)
            // Entries that are neither manifests nor indexes (an artifact's blobs) are not
            // fetched, as containerd's ChildrenHandler leaves them.
            var leaves = entries.filter { MediaType.isManifest($0.mediaType) }
            let nested = entries.filter { MediaType.isIndex($0.mediaType) }
            // An entry without a platform says it in its config (older tools wrote such lists).
            leaves = try leaves.map { m in
                guard m.platform == nil, !m.isAttestation else { return m }
                var m = m
                m.platform = try config(try decodeManifest(try document(m), as: m, from: source)).platform
                return m
            }
            let runnable = leaves.filter { !$0.isAttestation }
            var chosen: [Descriptor] = []
            for p in platforms ?? [Platform.host] {
                guard let m = PlatformMatcher(p).best(runnable) else {
                    throw RegistryError("\(ref) has no image for \(p) (it has: \(PlatformMatcher.describe(runnable)))")
                }
                if !chosen.contains(where: { $0.digest == m.digest }) { chosen.append(m) }
            }
            if Set(chosen.map(\.digest)) == Set(runnable.map(\.digest)) {
                // Every platform: keep the registry's documents as they are, attestations too.
                manifests = leaves
                indexes = nested + [top]
            } else if chosen.count == 1 {
                manifests = chosen
                stored = chosen[0]
            } else {
                manifests = chosen
                let own = try canonicalJSON(Index(mediaType: MediaType.ociIndex, manifests: chosen))
                stored = Descriptor(mediaType: MediaType.ociIndex, digest: try store.content.put(own), size: Int64(own.count))
            }
        }
        for m in manifests {
            let mbytes = try document(m)
            let manifest = try decodeManifest(mbytes, as: m, from: source)
            var blobs = manifest.layers
            if m.isAttestation {
                blobs.append(manifest.config)
            } else {
                // One diff_id per layer, known before a layer is fetched (their values are
                // checked as the layers unpack).
                try config(manifest).checkDiffIDCount(layers: manifest.layers.count, "manifest \(m.digest) of \(ref)")
                progress?("\(manifest.config.digest) done")
            }
            try concurrently(blobs) { d in
                try client.fetchBlob(repo, d, into: store.content)
                progress?("\(d.digest) done")
            }
            _ = try store.content.put(mbytes, expected: m.digest)
        }
        for i in indexes {
            _ = try store.content.put(try document(i), expected: i.digest)
        }
        if stored.platform == nil, !MediaType.isIndex(stored.mediaType) {
            stored = try store.platformManifests(of: stored)[0]
        }
        // One platform joins those already pulled under the name (as `rbuild import` does).
        if MediaType.isIndex(stored.mediaType) {
            try store.tag(ref.description, stored)
        } else {
            _ = try store.add(platformManifest: stored, as: ref.description)
        }
        return stored
    }

    /// Pushes the image `top` (a manifest or an index) from `store` to `ref`: blobs the
    /// repository lacks (several at once; `mountFrom`, another repository of the same registry, is
    /// asked to lend them first), then each manifest and nested index by digest, then the top
    /// one by tag. Returns the digest the registry has it under.
    public static func push(_ top: Descriptor, to ref: Reference, store: ImageStore, client given: RegistryClient? = nil,
                            mountFrom: String? = nil, progress: (@Sendable (String) -> Void)? = nil) throws -> Digest {
        let client = try given ?? RegistryClient(registry: ref)
        let repo = ref.repository
        // Children before the index that lists them (a registry checks that they exist):
        // attestation manifests and nested indexes travel too.
        for m in try store.documents(of: top) {
            let bytes = try store.content.read(m)
            if MediaType.isIndex(m.mediaType) {
                try client.pushManifest(repo, m.digest.description, bytes, mediaType: m.mediaType)
                continue
            }
            let manifest = try decodeManifest(bytes, as: m)
            try concurrently(manifest.layers + [manifest.config]) { d in
                guard store.content.contains(d.digest) else {
                    // A blob pushed there by another machine (a build node) need not be here.
                    if (try? client.blobExists(repo, d.digest)) == true {
                        progress?("\(d.digest) already exists")
                        return
                    }
                    throw RegistryError("cannot push \(ref): blob \(d.digest) is not in the local store: the image is incomplete; pull, import or build it again")
                }
                switch try namingBlobErrors("cannot push \(ref)", { try client.pushBlob(repo, d, from: store.content.blob(d), mountFrom: mountFrom) }) {
                case .existed: progress?("\(d.digest) already exists")
                case .mounted: progress?("\(d.digest) mounted from \(mountFrom ?? "")")
                case .uploaded: progress?("pushed \(d.digest)")
                }
            }
            if MediaType.isIndex(top.mediaType) {
                try client.pushManifest(repo, m.digest.description, bytes, mediaType: m.mediaType)
            }
        }
        try client.pushManifest(repo, ref.digest?.description ?? ref.tag ?? "latest", try store.content.read(top),
                                mediaType: top.mediaType)
        return top.digest
    }
}

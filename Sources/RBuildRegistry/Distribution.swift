import Foundation
import RBuildOCI

/// Pulling and pushing whole images between a registry and the local store.
public enum Distribution {
    final class FirstError: @unchecked Sendable { var error: Error?; let lock = NSLock() }

    /// Runs `work` over `items`, at most `limit` at once, each on a thread of its own (the
    /// requests block, and dispatch has few workers to spare on a small machine). The first error
    /// is thrown once all have stopped.
    static func concurrently(_ items: [Descriptor], limit: Int = 4, _ work: @escaping @Sendable (Descriptor) throws -> Void) throws {
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
    /// verified before it is kept, and names it `ref`. Returns what was stored: the platform's
    /// manifest, the registry's own index when every platform was asked for, else an index of
    /// those that were.
    public static func pull(_ ref: Reference, platforms: [Platform]? = nil, store: ImageStore,
                            client given: RegistryClient? = nil, progress: (@Sendable (String) -> Void)? = nil) throws -> Descriptor {
        let client = try given ?? RegistryClient(registry: ref)
        let repo = ref.repository
        let (top, bytes) = try client.manifest(repo, ref.manifestReference, expected: ref.digest)
        var manifests: [Descriptor] = []
        var stored = top
        if MediaType.isIndex(top.mediaType) {
            let index = try decodeJSON(Index.self, from: bytes, what: "index of \(ref)")
            let wanted = platforms ?? [Platform.host]
            let chosen = index.manifests.filter { m in wanted.contains { $0 == m.platform } }
            for p in wanted where !chosen.contains(where: { $0.platform == p }) {
                throw RegistryError("\(ref) has no image for \(p) (it has: \(index.manifests.compactMap { $0.platform?.description }.joined(separator: ", ")))")
            }
            manifests = chosen
            if chosen.count == index.manifests.count {
                _ = try store.content.put(bytes, expected: top.digest)
            } else if chosen.count == 1 {
                stored = chosen[0]
            } else {
                let own = try canonicalJSON(Index(mediaType: MediaType.ociIndex, manifests: chosen))
                stored = Descriptor(mediaType: MediaType.ociIndex, digest: try store.content.put(own), size: Int64(own.count))
            }
        } else {
            manifests = [top]
        }
        for m in manifests {
            let mbytes = m.digest == top.digest ? bytes : try client.manifest(repo, m.digest.description, expected: m.digest).1
            let manifest = try decodeJSON(Manifest.self, from: mbytes, what: "manifest \(m.digest) of \(ref)")
            try concurrently([manifest.config] + manifest.layers) { d in
                try client.fetchBlob(repo, d, into: store.content)
                progress?("\(d.digest) done")
            }
            _ = try store.content.put(mbytes, expected: m.digest)
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
    /// asked to lend them first), then each platform's manifest by digest, then the top one by
    /// tag. Returns the digest the registry has it under.
    public static func push(_ top: Descriptor, to ref: Reference, store: ImageStore, client given: RegistryClient? = nil,
                            mountFrom: String? = nil, progress: (@Sendable (String) -> Void)? = nil) throws -> Digest {
        let client = try given ?? RegistryClient(registry: ref)
        let repo = ref.repository
        let children = MediaType.isIndex(top.mediaType) ? try store.platformManifests(of: top) : []
        for m in MediaType.isIndex(top.mediaType) ? children : [top] {
            let bytes = try store.content.read(m)
            let manifest = try decodeJSON(Manifest.self, from: bytes, what: "manifest \(m.digest)")
            try concurrently(manifest.layers + [manifest.config]) { d in
                guard store.content.contains(d.digest) else {
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

import Foundation
import RBuildOCI
import RBuildRegistry
import RBuildSnapshots
import RBuildSystem
import Synchronization

/// Where an imported cache's blobs come from.
protocol CacheBlobSource: Sendable {
    /// For messages: `type=local,src=DIR`, a registry reference.
    var name: String { get }
    /// Blob `d` into `store`, verified against its digest (and size, when known).
    func fetch(_ d: Descriptor, into store: ContentStore) throws
}

/// A directory a `--cache-to type=local` wrote (an OCI image layout).
struct LayoutBlobSource: CacheBlobSource {
    let directory: String
    var name: String { "type=local,src=\(directory)" }
    func fetch(_ d: Descriptor, into store: ContentStore) throws {
        if store.contains(d.digest) { return }
        try store.ingestLayoutBlob(directory, d.digest, size: d.size >= 0 ? d.size : nil)
    }
}

/// A repository in a registry.
struct RegistryBlobSource: CacheBlobSource {
    let client: RegistryClient
    let reference: Reference
    var name: String { reference.description }
    func fetch(_ d: Descriptor, into store: ContentStore) throws {
        try client.fetchBlob(reference.repository, d, into: store)
    }
}

/// The caches `--cache-from` names, read before the build: every record by key, and the blobs
/// fetched only when a step needs a layer's files (or an export its bytes). An imported record is
/// used only where the local cache index has nothing for the key, and only when its chain
/// continues the layers the step's input has here: a local result is never replaced, and a layer
/// made on another base is never stacked on this one.
public final class ImportedCaches: Sendable {
    struct Found: Sendable {
        let chain: [CacheChainLayer]
        let source: Int
    }
    struct Pending: Sendable {
        let blob: Descriptor
        let source: Int
        var keys: [Digest]
    }
    private let records: [Digest: Found]
    /// `RUN --mount=type=cache` contents by id: the blob and its diffID.
    private let mounts: [String: (blob: Descriptor, diffID: Digest, source: Int)]
    private let sources: [any CacheBlobSource]
    /// Imported layers a stack names but the store lacks, by diffID.
    private let pending = Mutex<[Digest: Pending]>([:])
    private let fetches = InFlight<Descriptor>()
    let store: ContentStore
    let cache: CacheIndex
    let maxLayerSize: Int64

    /// How many records were read, for messages and tests.
    public var count: Int { records.count }

    init(records: [Digest: Found], mounts: [String: (blob: Descriptor, diffID: Digest, source: Int)], sources: [any CacheBlobSource],
         store: ContentStore, cache: CacheIndex, maxLayerSize: Int64) {
        self.records = records
        self.mounts = mounts
        self.sources = sources
        self.store = store
        self.cache = cache
        self.maxLayerSize = maxLayerSize
    }

    /// Reads every cache `specs` names, each a progress step. A cache that cannot be read (not
    /// there, unreachable, damaged) is a warning, as in buildx: the build goes on without it.
    /// The first import that has a key wins.
    public static func load(_ specs: [CacheImportSpec], store: ContentStore, cache: CacheIndex, reporter: ProgressReporter,
                            maxLayerSize: Int64 = MaxLayerSize.defaultValue) -> ImportedCaches {
        var records: [Digest: Found] = [:]
        var mounts: [String: (blob: Descriptor, diffID: Digest, source: Int)] = [:]
        var sources: [any CacheBlobSource] = []
        for spec in specs {
            let step = reporter.start("[internal] importing cache manifest from \(spec)")
            do {
                let (source, read) = try CacheReader.read(spec, store: store)
                sources.append(source)
                for r in read.records where records[r.key] == nil {
                    records[r.key] = Found(chain: r.chain, source: sources.count - 1)
                }
                for (id, m) in read.mounts where mounts[id] == nil {
                    mounts[id] = (m.blob, m.diffID, sources.count - 1)
                }
                step.output("\(read.records.count) cached step\(read.records.count == 1 ? "" : "s")"
                            + (read.mounts.isEmpty ? "" : ", \(read.mounts.count) cache mount\(read.mounts.count == 1 ? "" : "s")"))
                step.finish()
            } catch {
                step.output("WARNING: cannot import the cache \(spec): \(error)", stream: 2)
                step.finish()
                reporter.note("WARNING: cache \(spec) not imported: \(error)")
            }
        }
        return ImportedCaches(records: records, mounts: mounts, sources: sources, store: store, cache: cache,
                              maxLayerSize: maxLayerSize)
    }

    /// The record for `key`, if an import has one.
    func record(_ key: Digest) -> Found? { records[key] }

    /// What the record for `key` gives on top of `base` (the step's input as this build has it):
    /// no layer when its chain is `base`'s, one layer when it is `base`'s plus one, else nil (a
    /// chain made on other layers). A layer the store lacks is noted for `localLayer` to fetch,
    /// its size unknown (-1) until then; a key whose layer is here goes into the local index.
    func result(for key: Digest, on base: Stack) throws -> CachedResult? {
        guard let found = records[key] else { return nil }
        let diffIDs = found.chain.map(\.diffID)
        if diffIDs == base.diffIDs { return CachedResult(layer: nil, diffID: nil) }
        guard diffIDs.count == base.diffIDs.count + 1, Array(diffIDs.dropLast()) == base.diffIDs, let top = found.chain.last else {
            return nil
        }
        if let size = store.size(top.diffID) {
            let r = CachedResult(layer: Descriptor(mediaType: MediaType.ociLayer, digest: top.diffID, size: size), diffID: top.diffID)
            try cache.store(key, r)
            return r
        }
        pending.withLock { p in
            if p[top.diffID] == nil { p[top.diffID] = Pending(blob: top.blob, source: found.source, keys: []) }
            p[top.diffID]!.keys.append(key)
        }
        return CachedResult(layer: Descriptor(mediaType: MediaType.ociLayer, digest: top.diffID, size: -1), diffID: top.diffID)
    }

    /// The blob an imported layer not yet here comes from (for an export that can copy it as it
    /// is instead of fetching and compressing it again).
    func importedBlob(of diffID: Digest) -> (blob: Descriptor, source: any CacheBlobSource)? {
        pending.withLock { $0[diffID] }.map { ($0.blob, sources[$0.source]) }
    }

    /// `layer` (a stack's) as the store has it: an imported layer is fetched (once however many
    /// steps ask), verified by its blob digest and by its diffID, and stored uncompressed, as a
    /// layer built here is; the compressed blob stays, remembered as the conversion an export
    /// reuses. The keys that led to it go into the local cache index.
    public func localLayer(_ layer: Descriptor) throws -> Descriptor {
        if let size = store.size(layer.digest) {
            return Descriptor(mediaType: layer.mediaType, digest: layer.digest, size: size, annotations: layer.annotations)
        }
        guard let p = pending.withLock({ $0[layer.digest] }) else {
            throw SolveError("layer \(layer.digest) is not in the content store (\(store.root)) nor in an imported cache: run `rbuild check --repair`, then build again")
        }
        return try fetches.run(layer.digest) { try fetch(layer.digest, p) }
    }

    private func fetch(_ diffID: Digest, _ p: Pending) throws -> Descriptor {
        let source = sources[p.source]
        do {
            try source.fetch(p.blob, into: store)
            if p.blob.digest != diffID {
                let w = try BlobWriter(store: store)
                do {
                    try decompressLayer(store.blob(p.blob), limit: maxLayerSize) { try w.write($0) }
                    _ = try w.commit(expected: diffID)
                } catch {
                    w.abort()
                    throw error
                }
                if let tag = Self.conversionTag(p.blob.mediaType) {
                    try cache.rememberConversion(of: diffID, tag, p.blob)
                }
            }
        } catch {
            throw SolveError("the imported cache \(source.name): layer \(p.blob.digest) (diffID \(diffID)) refused: \(error) — the cache is damaged or was changed since it was exported; export it again, or build without this --cache-from")
        }
        guard let size = store.size(diffID) else { throw SolveError("internal: layer \(diffID) fetched but not stored") }
        let local = Descriptor(mediaType: MediaType.ociLayer, digest: diffID, size: size)
        for key in p.keys { try cache.store(key, CachedResult(layer: local, diffID: diffID)) }
        return local
    }

    /// The conversions-table name of a compressed blob's kind, at the default level (the level a
    /// blob was made with cannot be told from it).
    static func conversionTag(_ mediaType: String) -> String? {
        switch mediaType {
        case MediaType.ociLayerGzip: return "\(Compression.gzip.rawValue):-1"
        case MediaType.ociLayerZstd: return "\(Compression.zstd.rawValue):-1"
        default: return nil
        }
    }

    /// Fills a new cache-mount directory from an imported export of cache `id`, when an import
    /// has one: what `CacheMounts.acquire` runs as its seed. Returns the owners to set.
    func cacheMountSeed(id: String) -> ((String) throws -> [Ownership.Record])? {
        guard let m = mounts[id] else { return nil }
        let source = sources[m.source]
        return { [store, maxLayerSize] dir in
            do {
                try source.fetch(m.blob, into: store)
                return try unpackLayer(store.blob(m.blob), into: dir, layerName: "cache mount \(id)", whiteouts: .apply,
                                       check: LayerCheck(diffID: m.diffID, maxSize: maxLayerSize))
            } catch {
                throw SolveError("the imported cache \(source.name): the contents of cache mount \(id) (\(m.blob.digest)) refused: \(error)")
            }
        }
    }
}

/// Reads one exported cache: its records and cache mounts.
enum CacheReader {
    struct Read {
        var records: [CacheRecord] = []
        var mounts: [String: (blob: Descriptor, diffID: Digest)] = [:]
    }

    static func read(_ spec: CacheImportSpec, store: ContentStore) throws -> (any CacheBlobSource, Read) {
        switch spec.kind {
        case .local(let dir, let tag, let digest):
            let source = LayoutBlobSource(directory: dir)
            let top = try localEntry(dir, tag: tag, digest: digest)
            guard (0...Int64(DocumentLimits.maxSize)).contains(top.size) else {
                throw SolveError("\(dir)/index.json: \(top.digest) says \(top.size) bytes, over the \(DocumentLimits.maxSize >> 20) MiB limit for a cache index")
            }
            try source.fetch(top, into: store)
            return (source, try read(top, bytes: try store.read(top.digest, size: top.size), source: source, store: store))
        case .registry(let text):
            let ref = try Reference(parsing: text)
            let client = try RegistryClient(registry: ref)
            let source = RegistryBlobSource(client: client, reference: ref)
            let (top, bytes) = try client.manifest(ref.repository, ref.manifestReference, expected: ref.digest)
            return (source, try read(top, bytes: bytes, source: source, store: store) { d in
                try client.manifest(ref.repository, d.digest.description, expected: d.digest).1
            })
        }
    }

    /// The entry of the layout's index.json that `digest` or `tag` (default `latest`) names.
    static func localEntry(_ dir: String, tag: String?, digest: Digest?) throws -> Descriptor {
        guard let bytes = try readFileInRoot(root: dir, path: "index.json", limit: DocumentLimits.maxSize) else {
            throw SolveError("\(dir) has no index.json: not a cache a --cache-to type=local,dest=DIR wrote")
        }
        let index = try decodeJSON(Index.self, from: bytes, what: "\(dir)/index.json")
        if let digest {
            guard let d = index.manifests.first(where: { $0.digest == digest }) else {
                throw SolveError("\(dir)/index.json has no entry \(digest)")
            }
            return d
        }
        let name = tag ?? "latest"
        guard let d = index.manifests.first(where: { $0.annotations?["org.opencontainers.image.ref.name"] == name }) else {
            let names = index.manifests.compactMap { $0.annotations?["org.opencontainers.image.ref.name"] }
            throw SolveError("\(dir)/index.json has no cache named \(name) (it has: \(names.isEmpty ? "none" : names.joined(separator: ", ")))")
        }
        return d
    }

    /// A cache index, a cache manifest (image-manifest=true), or an image or index of images
    /// whose configs carry an inline cache. `manifest` reads a child manifest of an index.
    static func read(_ top: Descriptor, bytes: [UInt8], source: any CacheBlobSource, store: ContentStore,
                     manifest: ((Descriptor) throws -> [UInt8])? = nil) throws -> Read {
        let what = "the cache \(source.name)"
        func blob(_ d: Descriptor) throws -> [UInt8] {
            guard d.size <= DocumentLimits.maxSize else {
                throw SolveError("\(what): \(d.digest) says \(d.size) bytes, over the \(DocumentLimits.maxSize >> 20) MiB limit for a cache config")
            }
            try source.fetch(d, into: store)
            return try store.read(d.digest, size: d.size)
        }
        func child(_ d: Descriptor) throws -> [UInt8] {
            if let manifest { return try manifest(d) }
            return try blob(d)
        }
        var out = Read()
        func mounts(_ entries: [Descriptor]) {
            for d in entries {
                guard let id = d.annotations?[CacheMediaType.cacheMountAnnotation],
                      let diff = d.annotations?[CacheMediaType.uncompressedAnnotation].flatMap({ try? Digest(parsing: $0) }) else { continue }
                out.mounts[id] = (d, diff)
            }
        }
        func provided(_ entries: [Descriptor]) -> [Digest: Descriptor] {
            Dictionary(entries.map { ($0.digest, $0) }, uniquingKeysWith: { a, _ in a })
        }
        /// An image manifest: its inline cache, if its config has one.
        func inline(_ m: Manifest, _ d: Descriptor) throws {
            let configBytes = try blob(m.config)
            guard let object = try? JSONSerialization.jsonObject(with: Data(configBytes)) as? [String: Any],
                  let cacheText = object[CacheMediaType.inlineField] as? String else { return }
            let config = try decodeJSON(ImageConfig.self, from: configBytes, what: "\(what): config \(m.config.digest)")
            guard config.rootfs.diff_ids.count == m.layers.count else { return }
            out.records += try CacheConfigCodec.decodeInline(cacheText, layers: m.layers, diffIDs: config.rootfs.diff_ids,
                                                             what: "\(what): image \(d.digest)")
        }
        if MediaType.isIndex(top.mediaType) {
            let index = try decodeIndex(bytes, as: top, from: source.name)
            if let config = index.manifests.first(where: { $0.mediaType == CacheMediaType.config }) {
                let layers = index.manifests.filter { $0.mediaType != CacheMediaType.config }
                out.records = try CacheConfigCodec.decode(try blob(config), provided: provided(layers), what: "\(what): cache config")
                mounts(layers)
                return out
            }
            for d in index.manifests where MediaType.isManifest(d.mediaType) && !d.isAttestation {
                try inline(try decodeManifest(try child(d), as: d, from: source.name), d)
            }
            return out
        }
        guard MediaType.isManifest(top.mediaType) else {
            throw SolveError("\(what) is a \(top.mediaType), not a cache index or an image")
        }
        let m = try decodeManifest(bytes, as: top, from: source.name)
        if m.config.mediaType == CacheMediaType.config {
            out.records = try CacheConfigCodec.decode(try blob(m.config), provided: provided(m.layers), what: "\(what): cache config")
            mounts(m.layers)
        } else {
            try inline(m, top)
        }
        return out
    }
}

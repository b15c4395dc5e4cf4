import Foundation
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSnapshots
import RBuildSystem

/// A layer compressed as `compression` at `level` (nil: the default), converted once: the
/// conversion is remembered in `cache` and reused while its blob is in the store.
public func compressedLayer(_ layer: Descriptor, compression: Compression, level: Int?, store: ContentStore,
                            cache: CacheIndex?) throws -> Descriptor {
    let tag = "\(compression.rawValue):\(level ?? -1)"
    if let known = try cache?.conversion(of: layer.digest, tag), store.contains(known.digest) { return known }
    let c = try recompressLayer(layer, to: compression, level: level, store: store)
    if c != layer { try cache?.rememberConversion(of: layer.digest, tag, c) }
    return c
}

extension Solver {
    /// The steps a cache export of `roots` holds, each with its key and the stack it left: the
    /// chains of the images built (`min`), or every exec and file step of the graph (`max`).
    /// A step this build did not reach is included when the cache (local or imported) has it on
    /// top of a stack known here; one that cannot be placed so is left out.
    public func cacheRecords(_ roots: [Vertex], mode: CacheExportMode) async -> [(key: Digest, stack: Stack)] {
        var vertices: [Vertex] = []
        switch mode {
        case .min:
            var seen = Set<Digest>()
            for r in roots {
                var v = r
                while v.writesLayer, seen.insert(v.digest).inserted {
                    vertices.append(v)
                    v = v.inputs[0]
                }
            }
            vertices.reverse()
        case .max:
            vertices = Graph.walk(roots).filter(\.writesLayer)
        }
        var out: [(key: Digest, stack: Stack)] = []
        for v in vertices {
            guard let keyTask = keys[v.digest], let key = try? await keyTask.value, let s = await knownStack(v) else { continue }
            out.append((key, s))
        }
        return out
    }

    /// The vertex's stack when this build has it or a cache gives it without running anything.
    func knownStack(_ v: Vertex) async -> Stack? {
        if let t = stacks[v.digest], let s = try? await t.value { return s }
        switch v.op {
        case .source(.image), .source(.scratch):
            return try? await stack(v)
        case .exec, .file:
            guard let keyTask = keys[v.digest], let key = try? await keyTask.value, let base = await knownStack(v.inputs[0]) else {
                return nil
            }
            if let hit = try? cache.lookup(key), hit.layer.map({ store.content.contains($0.digest) }) ?? true {
                return base.adding(hit, snapshot: nil)
            }
            if let imports, let hit = try? imports.result(for: key, on: base) { return base.adding(hit, snapshot: nil) }
            return nil
        case .source:
            return nil
        }
    }

    /// The layers of every image the graph starts from: listed in a cache's chains, never
    /// exported with it (a build that imports the cache resolves the image itself).
    public func imageLayers(_ roots: [Vertex]) async -> Set<Digest> {
        var out = Set<Digest>()
        for v in Graph.walk(roots) {
            if case .source(.image) = v.op, let s = try? await stack(v) { out.formUnion(s.layers.map(\.digest)) }
        }
        return out
    }

    /// The `RUN --mount=type=cache` ids the graph uses, in order.
    public static func cacheMountIDs(_ roots: [Vertex]) -> [String] {
        var ids: [String] = []
        for v in Graph.walk(roots) {
            guard case .exec(let e) = v.op else { continue }
            for m in e.mounts {
                if case .cache(let c) = m.kind, !ids.contains(c.id) { ids.append(c.id) }
            }
        }
        return ids
    }

    /// Writes a cache export: the records' layers (compressed as `spec` asks; an imported layer
    /// not fetched travels as the cache had it), the cache mounts when asked, the cache config,
    /// and the index (or manifest) naming them, to a directory or a registry. `progress` gets a
    /// line per stage of the work.
    public func exportCache(_ spec: CacheExportSpec, records: [(key: Digest, stack: Stack)], imageLayers: Set<Digest>,
                            cacheMountIDs: [String], progress: @escaping @Sendable (String) -> Void) async throws -> Descriptor {
        try await blocking { [self] in
            try CacheWriter(solver: self, spec: spec, progress: progress)
                .write(records: records, imageLayers: imageLayers, cacheMountIDs: cacheMountIDs)
        }
    }
}

public enum CacheRecords {
    /// The inline cache (`--cache-to type=inline`) of an image whose layers are `imageLayers`:
    /// `records` are the steps of its own chain.
    public static func inline(_ records: [(key: Digest, stack: Stack)], imageLayers: [Descriptor]) throws -> String {
        let chains = records.map { r in
            CacheRecord(key: r.key, chain: zip(r.stack.layers, r.stack.diffIDs).map { CacheChainLayer(diffID: $0.1, blob: $0.0) })
        }
        return try CacheConfigCodec.encodeInline(chains, imageLayers: imageLayers)
    }
}

extension Vertex {
    /// An exec or file op: a step with a cache record.
    var writesLayer: Bool { op.writesLayer }
}

/// One cache export being written.
struct CacheWriter: Sendable {
    let solver: Solver
    let spec: CacheExportSpec
    let progress: @Sendable (String) -> Void
    var store: ContentStore { solver.store.content }

    /// Where a blob's bytes are: the content store, or an imported cache not fetched.
    enum Bytes: Sendable {
        case local
        case imported(any CacheBlobSource)
    }

    func write(records: [(key: Digest, stack: Stack)], imageLayers: Set<Digest>, cacheMountIDs: [String]) throws -> Descriptor {
        var blobs: [Digest: (Descriptor, Bytes)] = [:]
        var order: [Digest] = []
        var converted: [Digest: CacheChainLayer] = [:]   // a stack's layer digest → its chain entry
        /// The chain entry of a stack's layer, its bytes noted for upload; nil when neither the
        /// store nor an import has them.
        func entry(_ layer: Descriptor, _ diffID: Digest) throws -> CacheChainLayer? {
            if let known = converted[layer.digest] { return known }
            var made: CacheChainLayer?
            if imageLayers.contains(layer.digest) {
                made = CacheChainLayer(diffID: diffID, blob: layer)
            } else if let size = store.size(layer.digest) {
                var local = layer
                local.size = size
                let c = try compressedLayer(local, compression: spec.compression, level: spec.level, store: store, cache: solver.cache)
                made = CacheChainLayer(diffID: diffID, blob: c)
                if blobs[c.digest] == nil { blobs[c.digest] = (c, .local); order.append(c.digest) }
            } else if let (blob, source) = solver.imports?.importedBlob(of: diffID) {
                made = CacheChainLayer(diffID: diffID, blob: blob)
                if blobs[blob.digest] == nil { blobs[blob.digest] = (blob, .imported(source)); order.append(blob.digest) }
            }
            converted[layer.digest] = made
            return made
        }
        var cacheRecords: [CacheRecord] = []
        for (key, stack) in records {
            var chain: [CacheChainLayer] = []
            for (l, d) in zip(stack.layers, stack.diffIDs) {
                guard let e = try entry(l, d) else { break }
                chain.append(e)
            }
            if chain.count == stack.layers.count && !chain.isEmpty { cacheRecords.append(CacheRecord(key: key, chain: chain)) }
        }
        progress("\(cacheRecords.count) step\(cacheRecords.count == 1 ? "" : "s"), \(order.count) layer\(order.count == 1 ? "" : "s")")
        // Entries of the index (or manifest layers): the layers with their diffIDs, as BuildKit
        // annotates them, then the cache mounts.
        var diffIDs: [Digest: Digest] = [:]
        for r in cacheRecords { for l in r.chain { diffIDs[l.blob.digest] = l.diffID } }
        var entries: [Descriptor] = order.map { d in
            var desc = blobs[d]!.0
            desc.annotations = [CacheMediaType.uncompressedAnnotation: diffIDs[d]?.description ?? d.description]
            return desc
        }
        if spec.cacheMounts {
            for id in cacheMountIDs {
                guard let d = try exportCacheMount(id) else { continue }
                progress("cache mount \(id): \(d.size) bytes")
                entries.append(d)
                blobs[d.digest] = (d, .local)
            }
        }
        let configBytes = try CacheConfigCodec.encode(cacheRecords)
        let config = Descriptor(mediaType: CacheMediaType.config, digest: try store.put(configBytes), size: Int64(configBytes.count))
        blobs[config.digest] = (config, .local)
        let topBytes: [UInt8], mediaType: String
        if spec.imageManifest {
            mediaType = MediaType.ociManifest
            topBytes = try canonicalJSON(Manifest(mediaType: mediaType, config: config, layers: entries))
        } else {
            mediaType = MediaType.ociIndex
            topBytes = try canonicalJSON(Index(mediaType: mediaType, manifests: entries + [config]))
        }
        let top = Descriptor(mediaType: mediaType, digest: try store.put(topBytes), size: Int64(topBytes.count))
        switch spec.kind {
        case .local(let dir, let tag):
            try writeLocal(dir, tag: tag, top: top, blobs: blobs)
        case .registry(let text):
            try push(text, top: top, topBytes: topBytes, blobs: blobs)
        case .inline:
            throw SolveError("internal: the inline cache is written into the image config")
        }
        return top
    }

    /// A cache mount's contents as a layer of their own (owners as the steps saw them), marked
    /// with its id; nil when this state dir has no such cache.
    func exportCacheMount(_ id: String) throws -> Descriptor? {
        try solver.cacheMounts.withExisting(id: id) { dir -> Descriptor in
            // Against an empty base, the directory is a full tree: a 0/0 character device in it is
            // a file, not an overlay deletion.
            let empty = try makeTemporaryDirectory(in: solver.tmpRoot, prefix: "empty-")
            defer { rmdir(empty) }
            var options = LayerOptions(compression: spec.compression, level: spec.level, sourceDateEpoch: nil)
            options.mapOwners(through: solver.snapshotter.mapping)
            let layer = try writeLayer(fromDirectory: dir, base: empty, store: store, options: options)
            var d = layer.descriptor
            d.annotations = [CacheMediaType.cacheMountAnnotation: id, CacheMediaType.uncompressedAnnotation: layer.diffID.description]
            return d
        }
    }

    /// The blob's bytes in the store (an imported one fetched, verified).
    func local(_ d: Descriptor, _ bytes: Bytes) throws {
        if case .imported(let source) = bytes { try source.fetch(d, into: store) }
    }

    /// DIR as an OCI image layout: the blobs (each copied once, verified), then index.json with
    /// this export named `tag` (another name's entry stays), then blobs no entry reaches removed.
    func writeLocal(_ dir: String, tag: String, top: Descriptor, blobs: [Digest: (Descriptor, Bytes)]) throws {
        let blobDir = dir + "/blobs/sha256"
        do {
            try FileManager.default.createDirectory(atPath: blobDir, withIntermediateDirectories: true)
        } catch {
            throw SolveError("--cache-to type=local,dest=\(dir): cannot create \(blobDir): \(error)")
        }
        var copied = 0
        for (d, bytes) in blobs.values.sorted(by: { $0.0.digest < $1.0.digest }) + [(top, .local)] {
            let path = blobDir + "/" + d.digest.hex
            var st = stat()
            if lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size == d.size { continue }
            try local(d, bytes)
            try store.copy(store.blob(d), to: path)
            copied += 1
        }
        progress("\(copied) blob\(copied == 1 ? "" : "s") written to \(dir)")
        var index = Index(manifests: [])
        if let bytes = try readFileInRoot(root: dir, path: "index.json", limit: DocumentLimits.maxSize) {
            index = try decodeJSON(Index.self, from: bytes, what: "\(dir)/index.json")
        }
        let name = "org.opencontainers.image.ref.name"
        index.manifests.removeAll { $0.annotations?[name] == tag }
        var entry = top
        entry.annotations = [name: tag]
        index.manifests.append(entry)
        try replaceAtomically(dir + "/oci-layout", isDirectory: false) { try writeNewFile($0, Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8)) }
        try replaceAtomically(dir + "/index.json", isDirectory: false) { try writeNewFile($0, try canonicalJSON(index)) }
        try removeUnreachable(dir, index: index)
    }

    /// Removes the blobs of `dir` that no entry of its index reaches (an earlier export's), so a
    /// cache exported again and again does not grow. An entry that cannot be read keeps
    /// everything.
    func removeUnreachable(_ dir: String, index: Index) throws {
        var live = Set<Digest>()
        func visit(_ d: Descriptor, depth: Int) -> Bool {
            guard live.insert(d.digest).inserted else { return true }
            guard MediaType.isIndex(d.mediaType) || MediaType.isManifest(d.mediaType) else { return true }
            guard depth < DocumentLimits.maxDepth,
                  let bytes = try? readFileInRoot(root: dir, path: "blobs/sha256/" + d.digest.hex, limit: DocumentLimits.maxSize),
                  let doc = try? Document.decode(bytes, as: d) else { return false }
            switch doc {
            case .index(let i): return i.manifests.allSatisfy { visit($0, depth: depth + 1) }
            case .manifest(let m): return visit(m.config, depth: depth + 1) && m.layers.allSatisfy { visit($0, depth: depth + 1) }
            }
        }
        guard index.manifests.allSatisfy({ visit($0, depth: 0) }) else { return }
        var removed = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir + "/blobs/sha256")) ?? [] {
            guard let d = try? Digest(parsing: "sha256:" + name), !live.contains(d) else { continue }
            if unlink(dir + "/blobs/sha256/" + name) == 0 { removed += 1 }
        }
        if removed > 0 { progress("\(removed) blob\(removed == 1 ? "" : "s") of earlier exports removed") }
    }

    /// The blobs (each once: a registry that has one is not sent it again), then the index or
    /// manifest under the reference's tag.
    func push(_ text: String, top: Descriptor, topBytes: [UInt8], blobs: [Digest: (Descriptor, Bytes)]) throws {
        let ref = try Reference(parsing: text)
        let client = try RegistryClient(registry: ref)
        let repo = ref.repository
        let all = blobs.values.map(\.0)
        let where_ = blobs.mapValues(\.1)
        try Distribution.concurrently(all) { [self] d in
            if case .imported = where_[d.digest]!, try client.blobExists(repo, d.digest) {
                progress("\(d.digest) already exists")
                return
            }
            try local(d, where_[d.digest]!)
            switch try client.pushBlob(repo, d, from: store.blob(d)) {
            case .existed: progress("\(d.digest) already exists")
            case .mounted: progress("\(d.digest) mounted")
            case .uploaded: progress("pushed \(d.digest)")
            }
        }
        try client.pushManifest(repo, ref.digest?.description ?? ref.tag ?? "latest", topBytes, mediaType: top.mediaType)
        progress("pushed \(top.mediaType == MediaType.ociIndex ? "index" : "manifest") \(top.digest) as \(ref)")
    }
}

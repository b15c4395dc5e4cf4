import Foundation
import RBuildOCI

// The exported build cache is written in BuildKit's distributable format (cache/remotecache/v1 in
// moby/buildkit): an OCI index — or, with image-manifest=true, an image manifest — whose entries
// are the layer blobs and one config of type `application/vnd.buildkit.cacheconfig.v0`. The
// config lists layers (a blob and the index of its parent layer, -1 for none) and records (a
// cache key and the chain of layers its result is). rbuild's records carry rbuild's keys (see
// Graph.swift), so BuildKit parses such a cache and finds no hits, and the reverse; what is
// shared is the container and the layer chains.

public enum CacheMediaType {
    public static let config = "application/vnd.buildkit.cacheconfig.v0"
    /// An index entry or manifest layer holding a `RUN --mount=type=cache` directory (rbuild's own).
    public static let cacheMountAnnotation = "io.rbuild.cache-mount.id"
    /// containerd's annotation for a compressed blob's diffID.
    public static let uncompressedAnnotation = "containerd.io/uncompressed"
    /// The inline cache's field in an image config.
    public static let inlineField = "moby.buildkit.cache.v0"
}

/// BuildKit's cacheconfig.v0 document, every field rbuild reads or writes.
struct CacheConfigDocument: Codable, Equatable {
    struct Layer: Codable, Equatable {
        var blob: Digest
        /// BuildKit writes 0 by leaving the field out (Go's omitempty): missing is 0.
        var parent: Int?
        var annotations: Annotations?
    }
    struct Annotations: Codable, Equatable {
        var mediaType: String?
        var diffID: Digest?
        var size: Int64?
    }
    struct Record: Codable, Equatable {
        var digest: Digest
        var layers: [Result]?
        var chains: [Chain]?
        var inputs: [[Input]]?
    }
    struct Result: Codable, Equatable {
        var layer: Int
    }
    struct Chain: Codable, Equatable {
        var layers: [Int]
    }
    struct Input: Codable, Equatable {
        var selector: String?
        var link: Int
    }
    var layers: [Layer]?
    var records: [Record]?
}

/// One layer of a cached result's chain.
public struct CacheChainLayer: Sendable, Hashable {
    public var diffID: Digest
    /// The blob as the cache describes it (compressed or not). Whether the cache holds its bytes
    /// is the source's business: a base image's layers are listed, not exported.
    public var blob: Descriptor
    public init(diffID: Digest, blob: Descriptor) {
        self.diffID = diffID
        self.blob = blob
    }
}

/// A cache key and the root filesystem its step left: every layer, bottom first.
public struct CacheRecord: Sendable, Equatable {
    public var key: Digest
    public var chain: [CacheChainLayer]
    public init(key: Digest, chain: [CacheChainLayer]) {
        self.key = key
        self.chain = chain
    }
}

enum CacheConfigCodec {
    /// The config document for `records` (layers shared between chains written once).
    static func encode(_ records: [CacheRecord]) throws -> [UInt8] {
        var layers: [CacheConfigDocument.Layer] = []
        var index: [String: Int] = [:]   // "blob parent" → position
        var out: [CacheConfigDocument.Record] = []
        for r in records where !r.chain.isEmpty {
            var parent = -1
            for l in r.chain {
                let id = "\(l.blob.digest) \(parent)"
                if let at = index[id] {
                    parent = at
                    continue
                }
                layers.append(.init(blob: l.blob.digest, parent: parent,
                                    annotations: .init(mediaType: l.blob.mediaType, diffID: l.diffID, size: l.blob.size)))
                index[id] = layers.count - 1
                parent = layers.count - 1
            }
            out.append(.init(digest: r.key, layers: [.init(layer: parent)]))
        }
        return try canonicalJSON(CacheConfigDocument(layers: layers, records: out))
    }

    /// The records of a config document. `provided` are the blobs the cache lists (an index's
    /// entries or a manifest's layers), whose annotations may carry the diffID. A record whose
    /// chain loops, points outside the layers or has a layer with no diffID is left out; one with
    /// no result (BuildKit's links between keys) too.
    static func decode(_ bytes: [UInt8], provided: [Digest: Descriptor], what: String) throws -> [CacheRecord] {
        let doc = try decodeJSON(CacheConfigDocument.self, from: bytes, what: what)
        let layers = doc.layers ?? []
        func layer(_ i: Int) -> CacheChainLayer? {
            guard layers.indices.contains(i) else { return nil }
            let l = layers[i]
            let given = provided[l.blob]
            guard let diffID = l.annotations?.diffID
                    ?? given?.annotations?[CacheMediaType.uncompressedAnnotation].flatMap({ try? Digest(parsing: $0) }) else { return nil }
            let blob = given ?? Descriptor(mediaType: l.annotations?.mediaType ?? MediaType.ociLayerGzip, digest: l.blob,
                                           size: l.annotations?.size ?? -1)
            return CacheChainLayer(diffID: diffID, blob: blob)
        }
        func chain(top: Int) -> [CacheChainLayer]? {
            var out: [CacheChainLayer] = [], at = top, seen = Set<Int>()
            while at != -1 {
                guard seen.insert(at).inserted, let l = layer(at) else { return nil }
                out.append(l)
                at = layers[at].parent ?? 0
            }
            return out.reversed()
        }
        var records: [CacheRecord] = []
        for r in doc.records ?? [] {
            if let top = r.layers?.first, let c = chain(top: top.layer) {
                records.append(CacheRecord(key: r.digest, chain: c))
            } else if let list = r.chains?.first?.layers {
                let c = list.compactMap(layer)
                if c.count == list.count { records.append(CacheRecord(key: r.digest, chain: c)) }
            }
        }
        return records
    }

    /// The inline form: the records of one image, whose chains are prefixes of its layers,
    /// as the JSON array an image config carries (base64 in the config, as BuildKit writes it).
    static func encodeInline(_ records: [CacheRecord], imageLayers: [Descriptor]) throws -> String {
        var out: [CacheConfigDocument.Record] = []
        for r in records where !r.chain.isEmpty && r.chain.count <= imageLayers.count {
            out.append(.init(digest: r.key, layers: [.init(layer: r.chain.count - 1)]))
        }
        return Data(try canonicalJSON(out)).base64EncodedString()
    }

    /// The records an image's inline cache names: layer i is the image's layer i (its parent
    /// i-1), its diffID the config's.
    static func decodeInline(_ base64: String, layers: [Descriptor], diffIDs: [Digest], what: String) throws -> [CacheRecord] {
        guard let data = Data(base64Encoded: base64) else {
            throw SolveError("\(what): the inline cache (\(CacheMediaType.inlineField)) is not base64")
        }
        let records = try decodeJSON([CacheConfigDocument.Record].self, from: [UInt8](data), what: "\(what): the inline cache")
        let chainLayers = zip(layers, diffIDs).map { CacheChainLayer(diffID: $1, blob: $0) }
        return records.compactMap { r in
            guard let top = r.layers?.first?.layer, chainLayers.indices.contains(top) else { return nil }
            return CacheRecord(key: r.digest, chain: Array(chainLayers[...top]))
        }
    }
}

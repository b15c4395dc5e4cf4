import Foundation

/// Limits on the manifests and indexes rbuild reads, wherever they come from.
public enum DocumentLimits {
    /// The most bytes a manifest, an index or a config may have. Readers stop at this many (a
    /// registry's answer, a layout's file, an archive's member) instead of reading all and then
    /// refusing. containerd's resolver refuses above the same order (MaxManifestSize,
    /// 4·1048·1048 bytes); real manifests are a few KiB.
    public static let maxSize = 4 << 20
    /// How many indexes may be stacked, the top one included: index → index → index → index →
    /// manifest is the deepest accepted. Registries serve one level (two for an index of
    /// indexes); deeper only makes a reader walk for nothing.
    public static let maxDepth = 4
}

/// A manifest or an index, decoded through `Document.decode`: the one path every reader of
/// image documents takes (registry pulls, layouts, archives, the local store), so a document is
/// held to the same rules wherever it came from.
public enum Document: Sendable {
    case manifest(Manifest)
    case index(Index)

    /// What the two kinds are called in messages.
    enum Kind: String {
        case manifest, index

        init?(mediaType: String?) {
            if MediaType.isManifest(mediaType) { self = .manifest } else if MediaType.isIndex(mediaType) { self = .index } else { return nil }
        }
    }

    /// Which fields a document has, before it is decoded as anything.
    struct Shape: Decodable {
        /// Present, whatever its value (`null` counts as absent, as in Go's json.RawMessage).
        struct Field: Decodable {
            init(from decoder: Decoder) throws {}
        }

        var schemaVersion: Int?
        var mediaType: String?
        var config: Field?
        var layers: Field?
        var manifests: Field?
        var fsLayers: Field?

        static func decode(_ bytes: [UInt8], _ what: String) throws -> Shape {
            do {
                return try JSONDecoder().decode(Shape.self, from: Data(bytes))
            } catch {
                throw OCIError(.invalidJSON, "\(what) is not a JSON object with a manifest's or an index's fields: \(error)")
            }
        }
    }

    /// Decodes `bytes`, the content `d` names (its digest already checked by the reader), and
    /// refuses, naming `d` and `source` (a reference, a layout):
    /// - content over `DocumentLimits.maxSize`;
    /// - Docker schema 1 (`fsLayers`), a `schemaVersion` other than 2;
    /// - a `mediaType` field that names neither a manifest nor an index, or whose document has
    ///   the other kind's fields (`manifests` in a manifest; `config` or `layers` in an index);
    /// - content whose kind — its `mediaType`, else its fields — is not the kind `d` says
    ///   (an index where the descriptor says manifest, or the reverse);
    /// - a Docker schema-2 manifest or list without its `mediaType` field.
    ///
    /// This is containerd's rule (core/images `validateMediaType`: the descriptor decides, and
    /// content that identifies itself as, or has the fields of, the other kind is refused), as
    /// strict, and stricter where Docker is. A document may lack `mediaType` when its descriptor says what it is and its
    /// fields agree: OCI image-spec 1.0.0 only reserved the field and 1.1 still says it SHOULD
    /// (not MUST) be used, so older OCI content lacks it, and containerd and Docker both read it
    /// (Docker's detectManifestBlobMediaType falls back to OCI by shape). Docker's schema 2
    /// requires it: distribution's schema2 and manifestlist decoders refuse a document without
    /// it, and so does this. Where nothing types a document (`detectedMediaType`) its own field
    /// must say.
    public static func decode(_ bytes: [UInt8], as d: Descriptor, from source: String = "") throws -> Document {
        let what = "\(Kind(mediaType: d.mediaType)?.rawValue ?? "document") \(d.digest)\(source.isEmpty ? "" : " of \(source)")"
        func refuse(_ why: String) -> OCIError { OCIError(.invalidDocument, "\(what) \(why): refused") }
        guard bytes.count <= DocumentLimits.maxSize else {
            throw OCIError(.tooLarge, "\(what) has \(bytes.count) bytes, over the \(DocumentLimits.maxSize >> 20) MiB limit for a manifest or index: refused")
        }
        let shape = try Shape.decode(bytes, what)
        let own = try kind(of: shape, refuse)
        guard let said = Kind(mediaType: d.mediaType) else {
            throw refuse("has the media type \(d.mediaType) in its descriptor, which is neither a manifest nor an index")
        }
        guard own == said else {
            let how = shape.mediaType.map { "its mediaType \($0)" } ?? "its fields (it has no mediaType)"
            throw refuse("is \(own == .index ? "an index" : "a manifest") by \(how), but its descriptor says \(said.rawValue) (\(d.mediaType))")
        }
        if shape.mediaType == nil, d.mediaType == MediaType.dockerManifest || d.mediaType == MediaType.dockerManifestList {
            throw refuse("has no mediaType field, which a Docker schema 2 \(said == .index ? "manifest list" : "manifest") must have (its descriptor says \(d.mediaType))")
        }
        switch own {
        case .manifest: return .manifest(try decodeJSON(Manifest.self, from: bytes, what: what))
        case .index: return .index(try decodeJSON(Index.self, from: bytes, what: what))
        }
    }

    /// The kind a document is by its own account: its `mediaType`, which its fields must agree
    /// with, else its fields alone.
    static func kind(of shape: Shape, _ refuse: (String) -> OCIError) throws -> Kind {
        if shape.fsLayers != nil || shape.schemaVersion == 1 {
            // containerd 2.0 stopped reading schema 1 too; no registry has served it by default for years.
            throw refuse("is a Docker schema 1 manifest, which rbuild does not read (push the image again with a current tool)")
        }
        guard shape.schemaVersion == 2 else {
            throw refuse("has schemaVersion \(shape.schemaVersion.map(String.init) ?? "(none)"), not 2")
        }
        let manifestFields = shape.config != nil || shape.layers != nil
        let indexFields = shape.manifests != nil
        if let type = shape.mediaType {
            guard let k = Kind(mediaType: type) else {
                throw refuse("says its mediaType is \(type), which is neither an image manifest nor an index")
            }
            if k == .manifest && (indexFields || shape.config == nil) {
                throw refuse("says it is a manifest (\(type)) but has \(indexFields ? "an index's manifests" : "no config")")
            }
            if k == .index && (manifestFields || !indexFields) {
                throw refuse("says it is an index (\(type)) but has \(manifestFields ? "a manifest's config or layers" : "no manifests")")
            }
            return k
        }
        if shape.config != nil && !indexFields { return .manifest }
        if indexFields && !manifestFields { return .index }
        throw refuse("has no mediaType, and its fields (\(manifestFields ? "config or layers" : "no config"), \(indexFields ? "manifests" : "no manifests")) do not say whether it is a manifest or an index")
    }

    /// The media type of a document that nothing else types (a registry's answer without a
    /// manifest Content-Type; `oci-layout://DIR@sha256:…` naming a blob the layout's index.json
    /// does not list): its own `mediaType` field, which must be there and name a manifest or an
    /// index. Shape is checked when it is decoded (`decode`).
    public static func detectedMediaType(_ bytes: [UInt8], digest: Digest, from source: String = "") throws -> String {
        let what = "document \(digest)\(source.isEmpty ? "" : " of \(source)")"
        guard bytes.count <= DocumentLimits.maxSize else {
            throw OCIError(.tooLarge, "\(what) has \(bytes.count) bytes, over the \(DocumentLimits.maxSize >> 20) MiB limit for a manifest or index: refused")
        }
        let shape = try Shape.decode(bytes, what)
        guard let type = shape.mediaType else {
            throw OCIError(.invalidDocument, "\(what) has no mediaType, and nothing else says whether it is a manifest or an index: refused")
        }
        guard Kind(mediaType: type) != nil else {
            throw OCIError(.invalidDocument, "\(what) says its mediaType is \(type), which is neither an image manifest nor an index: refused")
        }
        return type
    }
}

/// The manifest `d` names: `Document.decode`, which must find a manifest.
public func decodeManifest(_ bytes: [UInt8], as d: Descriptor, from source: String = "") throws -> Manifest {
    guard case .manifest(let m) = try Document.decode(bytes, as: d, from: source) else {
        throw OCIError(.invalidDocument, "\(d.digest)\(source.isEmpty ? "" : " of \(source)") is an index where a manifest was expected: refused")
    }
    return m
}

/// The index `d` names: `Document.decode`, which must find an index.
public func decodeIndex(_ bytes: [UInt8], as d: Descriptor, from source: String = "") throws -> Index {
    guard case .index(let i) = try Document.decode(bytes, as: d, from: source) else {
        throw OCIError(.invalidDocument, "\(d.digest)\(source.isEmpty ? "" : " of \(source)") is a manifest where an index was expected: refused")
    }
    return i
}

/// Every entry under the index `top` (not `top` itself), nested indexes walked, children
/// before the index that lists them, each digest once. Every index is read with `read` (which
/// checks its digest) and decoded with `Document.decode`; a stack of more than
/// `DocumentLimits.maxDepth` indexes is refused. Entries that are neither a manifest nor an
/// index (an artifact's blob) are listed, not read.
public func indexEntries(under top: Descriptor, from source: String = "", read: (Descriptor) throws -> [UInt8]) throws -> [Descriptor] {
    var out: [Descriptor] = []
    var seen: Set<Digest> = [top.digest]
    func walk(_ d: Descriptor, level: Int) throws {
        guard level <= DocumentLimits.maxDepth else {
            throw OCIError(.tooDeep, "index \(d.digest)\(source.isEmpty ? "" : " of \(source)") is nested \(level) indexes deep, more than the \(DocumentLimits.maxDepth) accepted: refused")
        }
        for m in try decodeIndex(try read(d), as: d, from: source).manifests where seen.insert(m.digest).inserted {
            if MediaType.isIndex(m.mediaType) { try walk(m, level: level + 1) }
            out.append(m)
        }
    }
    try walk(top, level: 1)
    return out
}

extension ImageConfig {
    /// Refuses a config whose rootfs.diff_ids are not one per layer (`what` names the manifest
    /// or image with `layers` layers). The values are checked as each layer unpacks
    /// (`LayerStream`).
    public func checkDiffIDCount(layers: Int, _ what: String) throws {
        guard rootfs.diff_ids.count == layers else {
            throw OCIError(.invalidDocument, "\(what) has \(layers) layer\(layers == 1 ? "" : "s") but its config lists \(rootfs.diff_ids.count) diff_id\(rootfs.diff_ids.count == 1 ? "" : "s"): refused")
        }
    }
}

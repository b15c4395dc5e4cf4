import Foundation
import RBuildOCI
import RBuildSystem

/// OCI annotations for the exported image, as `docker buildx build --annotation` takes them:
/// `[TYPE[,TYPE…][[PLATFORM]]:]KEY=VALUE`, TYPE one of `manifest` (the default), `index`,
/// `manifest-descriptor` (the manifest's entry in the index) and `index-descriptor` (the index's
/// entry in an OCI layout's index.json); `[PLATFORM]` limits a manifest level to one platform.
public struct ImageAnnotations: Sendable, Equatable {
    public enum Level: String, Sendable, CaseIterable {
        case manifest, index
        case manifestDescriptor = "manifest-descriptor"
        case indexDescriptor = "index-descriptor"
    }
    public struct Entry: Sendable, Equatable {
        public var level: Level
        /// nil: every platform.
        public var platform: Platform?
        public var key: String
        public var value: String
    }
    public var entries: [Entry] = []

    public init() {}

    public var isEmpty: Bool { entries.isEmpty }

    public mutating func add(_ text: String) throws {
        guard let eq = text.firstIndex(of: "=") else { throw ExportError("--annotation \(text): expected [TYPE:]KEY=VALUE") }
        var key = String(text[..<eq])
        let value = String(text[text.index(after: eq)...])
        var levels: [Level] = [.manifest]
        var platform: Platform?
        // A type prefix ends at the first ':' before the '=' (keys such as org.opencontainers.* have none).
        if let colon = key.firstIndex(of: ":") {
            var prefix = String(key[..<colon])
            key = String(key[key.index(after: colon)...])
            if let open = prefix.firstIndex(of: "["), prefix.hasSuffix("]") {
                platform = try Platform(parsing: String(prefix[prefix.index(after: open)..<prefix.index(before: prefix.endIndex)]))
                prefix = String(prefix[..<open])
            }
            levels = try prefix.split(separator: ",").map { t in
                guard let l = Level(rawValue: String(t)) else {
                    throw ExportError("--annotation \(text): unknown type \(t) (manifest, index, manifest-descriptor, index-descriptor)")
                }
                return l
            }
            if platform != nil, levels.contains(where: { $0 == .index || $0 == .indexDescriptor }) {
                throw ExportError("--annotation \(text): a platform only applies to manifest and manifest-descriptor")
            }
        }
        guard !key.isEmpty else { throw ExportError("--annotation \(text): empty key") }
        for l in levels { entries.append(Entry(level: l, platform: platform, key: key, value: value)) }
    }

    /// The annotations of `level` for `platform` (nil: an index's), later ones winning.
    public func values(_ level: Level, platform: Platform? = nil) -> [String: String] {
        var out: [String: String] = [:]
        for e in entries where e.level == level && (e.platform == nil || platform.map { e.platform!.isSame(as: $0) } == true) {
            out[e.key] = e.value
        }
        return out
    }

    /// `manifest` with the manifest annotations for its platform (a new manifest in the store),
    /// and its descriptor with the manifest-descriptor ones.
    func apply(toManifest manifest: Descriptor, store: ContentStore) throws -> Descriptor {
        let own = values(.manifest, platform: manifest.platform)
        let entry = values(.manifestDescriptor, platform: manifest.platform)
        var d = manifest
        if !own.isEmpty {
            var m = try decodeManifest(try store.read(manifest), as: manifest)
            m.annotations = (m.annotations ?? [:]).merging(own) { _, new in new }
            let bytes = try canonicalJSON(m)
            d.digest = try store.put(bytes)
            d.size = Int64(bytes.count)
        }
        if !entry.isEmpty { d.annotations = (d.annotations ?? [:]).merging(entry) { _, new in new } }
        return d
    }
}

import Foundation
import RBuildSystem

/// Named local images in a state directory: `images.json` maps a name to the descriptor of a
/// manifest or an index in the content store. Writers hold `images.lock` and replace the file
/// atomically, so concurrent rbuild processes never see half a list.
public final class ImageStore: @unchecked Sendable {
    public let root: String
    public let content: ContentStore

    public init(root: String) throws {
        self.root = absolutePath(root)
        try makeDirectory(self.root)
        content = try ContentStore(root: self.root)
    }

    /// `name` with `:latest` when it has neither tag nor digest (as docker names images).
    public static func normalise(_ name: String) throws -> String {
        guard !name.isEmpty, !name.contains(where: { $0.isWhitespace }), !name.hasPrefix(":"), !name.hasSuffix(":") else {
            throw OCIError(.invalidArgument, "invalid image name \"\(name)\": use lowercase letters, digits, '.', '_', '-', '/' and an optional :tag")
        }
        let lastSlash = name.lastIndex(of: "/")
        let tail = lastSlash.map { name[name.index(after: $0)...] } ?? name[...]
        if tail.contains(":") || name.contains("@") { return name }
        return name + ":latest"
    }

    struct Entry: Codable {
        var name: String
        var descriptor: Descriptor
        var created: String?
    }

    /// Where everything is in the state directory.
    public var layout: StateLayout { StateLayout(root: root) }

    var listPath: String { layout.images }

    func load() throws -> [Entry] {
        guard let data = FileManager.default.contents(atPath: listPath) else { return [] }
        return try decodeJSON([Entry].self, from: [UInt8](data), what: listPath)
    }

    /// Runs `body` with the exclusive lock; what it returns is written back.
    func update(_ body: (inout [Entry]) throws -> Void) throws {
        let lockfd = open(layout.imagesLock, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lockfd >= 0 else { throw OCIError(.io, "cannot open \(layout.imagesLock): \(String(cString: strerror(errno)))") }
        defer { close(lockfd) }
        while flock(lockfd, LOCK_EX) != 0 && errno == EINTR {}
        var entries = try load()
        try body(&entries)
        let tmp = listPath + ".\(getpid()).tmp"
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try writeFile(tmp, [UInt8](try e.encode(entries.sorted { $0.name < $1.name })))
        guard rename(tmp, listPath) == 0 else { throw OCIError(.io, "cannot replace \(listPath): \(String(cString: strerror(errno)))") }
    }

    public func list() throws -> [(name: String, descriptor: Descriptor)] {
        try load().map { ($0.name, $0.descriptor) }
    }

    /// The image named `name`; `busybox` also finds `docker.io/library/busybox:latest` and
    /// `user/app` finds `docker.io/user/app:latest`, as docker spells them.
    public func lookup(_ name: String) throws -> Descriptor? {
        find(try ImageStore.normalise(name), in: try load())
    }

    func find(_ n: String, in entries: [Entry]) -> Descriptor? {
        for c in [n, "docker.io/" + n, "docker.io/library/" + n] {
            if let e = entries.first(where: { $0.name == c }) { return e.descriptor }
        }
        return nil
    }

    public func tag(_ name: String, _ descriptor: Descriptor) throws {
        let n = try ImageStore.normalise(name)
        try update { entries in Self.replace(n, descriptor, in: &entries) }
    }

    /// Names the image `source` names `target` too (`rbuild tag`): the same descriptor, no blob
    /// copied; `target` is replaced when it named another image.
    @discardableResult
    public func tag(_ source: String, as target: String) throws -> Descriptor {
        let n = try ImageStore.normalise(target)
        var found: Descriptor?
        try update { entries in
            found = find(try ImageStore.normalise(source), in: entries)
            if let found { Self.replace(n, found, in: &entries) }
        }
        guard let found else { throw OCIError(.notFound, "no such image: \(try ImageStore.normalise(source)) (see `rbuild images`)") }
        return found
    }

    static func replace(_ n: String, _ descriptor: Descriptor, in entries: inout [Entry]) {
        entries.removeAll { $0.name == n }
        entries.append(Entry(name: n, descriptor: descriptor, created: timestamp(nil)))
    }

    /// Adds a single-platform manifest under `name`: a new image, or one more platform of an
    /// existing one (which then becomes an index; the same platform is replaced). Read, merge
    /// and write happen under the list's lock: a multi-platform build pulls each platform of a
    /// base at once, and neither may lose the other's.
    public func add(platformManifest m: Descriptor, as name: String) throws -> Descriptor {
        let n = try ImageStore.normalise(name)
        var result = m
        try update { entries in
            var manifests = [m]
            if let existing = find(n, in: entries) {
                let others = try platformManifests(of: existing).filter { o in
                    !(o.platform.map { p in m.platform.map { p.isSame(as: $0) } ?? false } ?? false)
                }
                manifests = others + [m]
            }
            if manifests.count > 1 {
                let index = Index(mediaType: MediaType.ociIndex,
                                  manifests: manifests.sorted { $0.platform?.description ?? "" < $1.platform?.description ?? "" })
                let bytes = try canonicalJSON(index)
                result = Descriptor(mediaType: MediaType.ociIndex, digest: try content.put(bytes), size: Int64(bytes.count))
            }
            Self.replace(n, result, in: &entries)
        }
        return result
    }

    public func remove(_ name: String) throws {
        let n = try ImageStore.normalise(name)
        var found = false
        try update { entries in
            found = entries.contains { $0.name == n }
            entries.removeAll { $0.name == n }
        }
        if !found { throw OCIError(.notFound, "no such image: \(n) (see `rbuild images`)") }
    }

    /// The runnable per-platform manifests of an image: itself when it is one manifest, else
    /// its index's entries with nested indexes flattened and attestation manifests left out. An
    /// entry that names no platform gets its config's.
    public func platformManifests(of d: Descriptor) throws -> [Descriptor] {
        try documents(of: d).filter { MediaType.isManifest($0.mediaType) && !$0.isAttestation }
            .map { try withPlatform($0) }
    }

    /// Every manifest and nested index under `d` (not `d` itself), children before the index
    /// that lists them, attestations included: what copying the image whole has to carry.
    public func documents(of d: Descriptor) throws -> [Descriptor] {
        guard MediaType.isIndex(d.mediaType) else { return [d] }
        return try indexEntries(under: d, read: content.read)
    }

    /// `m` with its platform, read from its config when the descriptor names none.
    func withPlatform(_ m: Descriptor) throws -> Descriptor {
        guard m.platform == nil else { return m }
        var m = m
        m.platform = try config(of: try decodeManifest(try content.read(m), as: m)).platform
        return m
    }

    /// The config a manifest names, read (its digest checked) and decoded.
    public func config(of manifest: Manifest) throws -> ImageConfig {
        try decodeJSON(ImageConfig.self, from: try content.read(manifest.config), what: "config \(manifest.config.digest)")
    }

    /// The manifest for `platform` (the best match, as containerd chooses it), or when none is
    /// asked for: the only one, else the host's.
    public func manifest(of d: Descriptor, platform: Platform?) throws -> (Descriptor, Manifest) {
        let all = try platformManifests(of: d)
        let pick: Descriptor?
        if let platform {
            pick = PlatformMatcher(platform).best(all)
        } else {
            pick = all.count == 1 ? all[0] : PlatformMatcher(Platform.host).best(all) ?? all.first
        }
        guard let chosen = pick else {
            throw OCIError(.notFound, "the image has no manifest for \(platform?.description ?? "any platform") (it has: \(PlatformMatcher.describe(all)))")
        }
        return (chosen, try decodeManifest(try content.read(chosen), as: chosen))
    }

    /// Removes blobs that neither a named image nor `extra` (a build cache's layers) uses.
    public func pruneBlobs(keeping extra: [Digest] = [], recipeGrace: Int = 3600) throws -> (blobs: Int, bytes: Int64) {
        var live = Set(extra)
        var queue = try list().map(\.descriptor)
        // Only indexes and manifests are read (a layer is never opened); a document that cannot
        // be read keeps itself and loses only what it would have named.
        while let d = queue.popLast() {
            guard live.insert(d.digest).inserted, MediaType.isIndex(d.mediaType) || MediaType.isManifest(d.mediaType),
                  let bytes = try? content.read(d) else { continue }
            switch try? Document.decode(bytes, as: d) {
            case .index(let index)?: queue += index.manifests
            case .manifest(let m)?: queue += [m.config] + m.layers
            case nil: break
            }
        }
        return try content.removeBlobs(except: live, recipeGrace: recipeGrace)
    }
}

/// Builds a one-layer image from a root filesystem directory and stores it.
public func importDirectory(_ dir: String, platform: Platform, store: ImageStore,
                            options: LayerOptions = LayerOptions()) throws -> Descriptor {
    let layer = try writeLayer(fromDirectory: dir, store: store.content, options: options)
    return try storeSingleLayerImage(layer: layer, platform: platform, store: store, createdBy: "rbuild import", options: options)
}

func storeSingleLayerImage(layer: LayerResult, platform: Platform, store: ImageStore, createdBy: String,
                           options: LayerOptions) throws -> Descriptor {
    let created = timestamp(options.sourceDateEpoch)
    var cfg = ImageConfig.Config()
    cfg.Env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    let config = ImageConfig(created: created, author: nil, architecture: platform.architecture, os: platform.os,
                             variant: platform.variant, config: cfg,
                             rootfs: ImageConfig.RootFS(diff_ids: [layer.diffID]),
                             history: [ImageConfig.History(created: created, created_by: createdBy)])
    let configBytes = try canonicalJSON(config)
    let configDigest = try store.content.put(configBytes)
    let manifest = Manifest(mediaType: MediaType.ociManifest,
                            config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(configBytes.count)),
                            layers: [layer.descriptor])
    let bytes = try canonicalJSON(manifest)
    let d = try store.content.put(bytes)
    return Descriptor(mediaType: MediaType.ociManifest, digest: d, size: Int64(bytes.count), platform: platform)
}

/// RFC 3339 time in UTC, whole seconds: SOURCE_DATE_EPOCH when given, else now.
public func timestamp(_ epoch: Int64?) -> String {
    RFC3339.format(seconds: epoch ?? Int64(time(nil)))
}

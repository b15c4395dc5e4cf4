import CArchive
import Foundation
import RBuildSystem

/// Where a `TarReader`'s bytes come from: a blob as stored (checked against its digest as it is
/// read), or a layer's uncompressed stream (`LayerStream`: limited, and checked against its
/// diff_id at the end).
protocol TarSource: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    /// Reads what is left and does the end's checks.
    func finish() throws
}

extension BlobReader: TarSource {}
extension LayerStream: TarSource {}

/// Reads tar archives with libarchive, one entry at a time: an image's layer through its
/// `LayerStream` (which decompresses it, gzip, zstd or plain), any other archive (a context's
/// tarball, `rbuild load`'s) as libarchive's filters read it (plain, gzip, zstd, bzip2, xz). The
/// source is checked when the archive ends (`next` returning nil) or fails, before the caller
/// commits what it unpacked.
public final class TarReader {
    let a: OpaquePointer
    let path: String
    let source: TarSource
    /// One buffer for every entry's data (not a fresh, zeroed megabyte per file).
    let buffer: UnsafeMutableRawBufferPointer
    /// What libarchive reads the (compressed) stream into.
    let input: UnsafeMutableRawBufferPointer
    /// The source's failure (a corrupt blob, a read error, a layer over its limit), which
    /// libarchive only sees as -1.
    var sourceError: Error?

    public convenience init(path: String) throws {
        try self.init(StoredBlob(path: path))
    }

    public convenience init(_ blob: StoredBlob) throws {
        try self.init(source: BlobReader(blob), name: blob.digest.map { "blob \($0)" } ?? blob.path, filters: true)
    }

    /// The tar of an image's layer, already decompressed by `layer`.
    public convenience init(layer: LayerStream) throws {
        try self.init(source: layer, name: layer.name, filters: false)
    }

    init(source: TarSource, name: String, filters: Bool) throws {
        path = name
        self.source = source
        buffer = .allocate(byteCount: 1 << 20, alignment: 16)
        input = .allocate(byteCount: 1 << 20, alignment: 16)
        a = archive_read_new()
        archive_read_support_format_tar(a)
        if filters {
            archive_read_support_filter_gzip(a)
            archive_read_support_filter_zstd(a)
            archive_read_support_filter_bzip2(a)
            archive_read_support_filter_xz(a)
        }
        archive_read_support_filter_none(a)
        // Every stored property is set: a throw from here on runs deinit, which frees `a` (it
        // must not be freed here as well: libarchive aborts on a second archive_read_free).
        let rc = archive_read_open(a, Unmanaged.passUnretained(self).toOpaque(), nil, { _, client, out in
            let r = Unmanaged<TarReader>.fromOpaque(client!).takeUnretainedValue()
            do {
                let n = try r.source.read(into: r.input)
                out?.pointee = UnsafeRawPointer(r.input.baseAddress)
                return n
            } catch {
                r.sourceError = error
                return -1
            }
        }, nil)
        guard rc == ARCHIVE_OK else { throw failure("cannot read \(path) as a tar archive") }
    }

    deinit {
        archive_read_free(a)
        buffer.deallocate()
        input.deallocate()
    }

    /// The error to throw when libarchive failed: the blob's own (corrupt, unreadable) when it
    /// has one — a damaged stream is checked to the end to tell — else libarchive's message.
    func failure(_ what: String) -> Error {
        if let sourceError { return sourceError }
        do { try source.finish() } catch { return error }
        return OCIError(.io, "\(what): \(archiveError(a))")
    }

    /// The next entry (a libarchive `archive_entry`, valid until the next call), or nil at the
    /// end, once the whole source has been read and checked.
    public func next() throws -> OpaquePointer? {
        var e: OpaquePointer?
        let rc = archive_read_next_header(a, &e)
        if rc == ARCHIVE_EOF {
            try source.finish()
            return nil
        }
        // A damaged stream can decode to a header without a name (callers need one).
        if rc < ARCHIVE_WARN || e.map({ archive_entry_pathname($0) == nil }) ?? true { throw failure("\(path) is damaged") }
        return e
    }

    /// Streams the current entry's data to `body`.
    public func data(_ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        while true {
            let n = archive_read_data(a, buffer.baseAddress, buffer.count)
            if n < 0 { throw failure("\(path) is damaged (truncated?)") }
            if n == 0 { return }
            try body(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
    }
}

/// libarchive's message for the last failure; it may have none (a callback's -1 sets no
/// string), and String(cString:) of NULL would crash.
func archiveError(_ a: OpaquePointer) -> String {
    archive_error_string(a).map { String(cString: $0) } ?? "unknown libarchive error"
}

/// An entry name made relative (leading `/` and `./` dropped), refusing `..` components (names
/// as the kernel splits them: `../\u{301}x` is `..` and a name starting with a combining mark).
public func safeEntryName(_ raw: String, archive: String) throws -> String {
    var parts: [Substring] = []
    for p in pathComponents(raw) where !p.utf8.elementsEqual(".".utf8) {
        if p.utf8.elementsEqual("..".utf8) {
            throw OCIError(.unsafeEntry, "\(archive) has an unsafe entry \"\(raw)\": names with .. are refused")
        }
        parts.append(p)
    }
    return parts.joined(separator: "/")
}

extension ImageStore {
    /// Loads an OCI layout directory, an OCI archive or a Docker archive. `tag` picks an image by
    /// its ref name (OCI) or repo tag (Docker); `name` is the local name (default: that ref).
    /// Every blob is verified, every manifest and index decoded through `Document.decode`,
    /// layers are decompressed (at most `maxLayerSize` bytes each) to check their diffIDs, and
    /// nothing reaches the store until all of it has been checked.
    @discardableResult
    public func load(path: String, tag: String? = nil, name: String? = nil,
                     maxLayerSize: Int64 = MaxLayerSize.defaultValue) throws -> (name: String, descriptor: Descriptor) {
        try load(path: path, tag: tag, name: name, named: true, maxLayerSize: maxLayerSize)
    }

    /// What `load` does but the naming: the image's blobs checked and stored, its top descriptor
    /// returned (`FROM oci-layout://DIR[:TAG]`, which must not add a name to the store).
    /// `digest` picks a manifest or index by digest instead (`oci-layout://DIR@sha256:…`).
    public func ingest(path: String, tag: String? = nil, digest: Digest? = nil,
                       maxLayerSize: Int64 = MaxLayerSize.defaultValue) throws -> Descriptor {
        try load(path: path, tag: tag, digest: digest, name: nil, named: false, maxLayerSize: maxLayerSize).descriptor
    }

    func load(path: String, tag: String?, digest: Digest? = nil, name: String?, named: Bool,
              maxLayerSize: Int64) throws -> (name: String, descriptor: Descriptor) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw OCIError(.notFound, "\(path) does not exist")
        }
        let staging = try temporaryDirectory(near: layout.ingest + "/x")
        defer { try? FileManager.default.removeItem(atPath: staging) }
        let stage = try ContentStore(root: staging)
        var files: [String: [UInt8]] = [:]      // small metadata files by name, DocumentLimits.maxSize at most
        var legacy: [String: Digest] = [:]      // Docker archive layer paths → digest
        func tooLarge(_ what: String) -> OCIError {
            OCIError(.tooLarge, "\(path): \(what) is larger than \(DocumentLimits.maxSize >> 20) MiB, the limit for a manifest, index or config: refused (read no further)")
        }

        if isDir.boolValue {
            for meta in ["oci-layout", "index.json", "manifest.json", "repositories"] {
                // Inside the layout, a regular file, no more than the limit read (readFileInRoot).
                do {
                    guard let bytes = try readFileInRoot(root: path, path: meta, limit: DocumentLimits.maxSize) else { continue }
                    files[meta] = bytes
                } catch let e as ImageFileError {
                    if case .tooLarge = e.problem { throw tooLarge(meta) }
                    throw OCIError(.unsupported, "\(path): \(meta) is refused: \(e)")
                }
            }
        } else {
            let reader = try TarReader(path: path)
            while let e = try reader.next() {
                guard archive_entry_filetype(e) == AE_IFREG else { continue }
                let name = try safeEntryName(String(cString: archive_entry_pathname(e)), archive: path)
                if name.hasPrefix("blobs/sha256/") {
                    let expected = try Digest(parsing: "sha256:" + name.dropFirst(13))
                    let w = try BlobWriter(store: stage)
                    try reader.data { try w.write($0) }
                    _ = try w.commit(expected: expected)
                } else if ["oci-layout", "index.json", "manifest.json", "repositories"].contains(name) || name.hasSuffix(".json") {
                    guard archive_entry_size(e) <= DocumentLimits.maxSize else { throw tooLarge(name) }
                    var bytes: [UInt8] = []
                    try reader.data {
                        guard bytes.count + $0.count <= DocumentLimits.maxSize else { throw tooLarge(name) }
                        bytes += $0
                    }
                    files[name] = bytes
                } else if name.hasSuffix("/layer.tar") || name.hasSuffix(".tar") {
                    let w = try BlobWriter(store: stage)
                    try reader.data { try w.write($0) }
                    legacy[name] = try w.commit().digest
                }
            }
        }

        /// A blob from the archive (staged) or the layout directory (ingested with verification,
        /// read no further than `limit` or the descriptor's size).
        func blob(_ d: Digest, size: Int64?, limit: Int64? = nil) throws {
            if stage.contains(d) || content.contains(d) { return }
            guard isDir.boolValue else {
                throw OCIError(.missingBlob, "\(path) refers to blob \(d), which it does not contain")
            }
            do {
                try stage.ingestLayoutBlob(path, d, size: size, limit: limit)
            } catch let e as OCIError where e.code == .tooLarge {
                throw tooLarge("blob \(d)")
            }
        }
        /// A manifest, index or config: no more than DocumentLimits.maxSize bytes are read.
        func read(_ d: Digest, size: Int64?) throws -> [UInt8] {
            if let size, size > DocumentLimits.maxSize {
                throw OCIError(.tooLarge, "\(path): the descriptor of \(d) says \(size) bytes, over the \(DocumentLimits.maxSize >> 20) MiB limit for a manifest, index or config: refused")
            }
            try blob(d, size: size, limit: Int64(DocumentLimits.maxSize))
            return stage.contains(d) ? try stage.read(d, size: size) : try content.read(d, size: size)
        }
        func read(_ d: Descriptor) throws -> [UInt8] { try read(d.digest, size: d.size) }

        var top: Descriptor
        var localName: String
        if let indexBytes = files["index.json"] {
            let index = try decodeJSON(Index.self, from: indexBytes, what: "\(path)/index.json")
            var pick = try chooseLayoutEntry(index.manifests, tag: tag, digest: digest, path: path)
            if pick == nil, let digest {
                // A manifest or index inside the layout but not named in index.json: only its own
                // mediaType says which.
                let bytes = try read(digest, size: nil)
                pick = Descriptor(mediaType: try Document.detectedMediaType(bytes, digest: digest, from: path),
                                  digest: digest, size: Int64(bytes.count))
            }
            guard let pick else { throw OCIError(.notFound, "\(path) holds no image") }
            top = pick
            top.annotations = nil
            let ref = pick.annotations?["io.containerd.image.name"] ?? pick.annotations?["org.opencontainers.image.ref.name"]
            guard let n = name ?? ref ?? (named ? nil : "") else {
                throw OCIError(.invalidArgument, "the image in \(path) has no ref name: give it one (rbuild load PATH NAME)")
            }
            localName = n
            // Fetch and check every blob the image needs: each manifest and index as its
            // descriptor says it is (`Document.decode`), indexes no deeper than the limit, each
            // document, and each layer shared by several platforms, once.
            let entries: [Descriptor]
            if MediaType.isIndex(top.mediaType) {
                entries = try indexEntries(under: top, from: path, read: read)
            } else if MediaType.isManifest(top.mediaType) {
                entries = [top]
            } else {
                throw OCIError(.invalidDocument, "\(path): the image \(top.digest) has the media type \(top.mediaType), which is neither a manifest nor an index: refused")
            }
            var verified: [Digest: Digest] = [:]
            for d in entries where !MediaType.isIndex(d.mediaType) {
                guard MediaType.isManifest(d.mediaType) else {
                    try blob(d.digest, size: d.size)   // an artifact's blob travels as it is
                    continue
                }
                let m = try decodeManifest(try read(d), as: d, from: path)
                let config = try decodeJSON(ImageConfig.self, from: try read(m.config), what: "config \(m.config.digest) of \(path)")
                try config.checkDiffIDCount(layers: m.layers.count, "manifest \(d.digest) of \(path)")
                for l in m.layers { try blob(l.digest, size: l.size) }
                try checkDiffIDs(m.layers.map(\.digest), config: config, staged: stage, limit: maxLayerSize, verified: &verified)
            }
        } else if let manifestBytes = files["manifest.json"] {
            struct Entry: Decodable { var Config: String; var RepoTags: [String]?; var Layers: [String] }
            let entries = try decodeJSON([Entry].self, from: manifestBytes, what: "\(path)/manifest.json")
            guard let entry = entries.first(where: { tag == nil || ($0.RepoTags ?? []).contains { $0.hasSuffix(":" + tag!) } }) else {
                throw OCIError(.notFound, "\(path) has no image tagged \(tag ?? "")")
            }
            func digest(of member: String) throws -> Digest {
                if member.hasPrefix("blobs/sha256/") { return try Digest(parsing: "sha256:" + member.dropFirst(13)) }
                if let d = legacy[member] { return d }
                if member.hasSuffix(".json"), let bytes = files[member] { return try stage.put(bytes) }
                throw OCIError(.missingBlob, "\(path) lists \(member) in manifest.json but does not contain it")
            }
            let configDigest = try digest(of: entry.Config)
            let configBytes = try read(configDigest, size: nil)
            let config = try decodeJSON(ImageConfig.self, from: configBytes, what: "config \(configDigest)")
            var layers: [Descriptor] = []
            for member in entry.Layers {
                let d = try digest(of: member)
                try blob(d, size: nil)
                let store = stage.contains(d) ? stage : content
                layers.append(Descriptor(mediaType: try detectLayerMediaType(store.path(d)), digest: d, size: store.size(d) ?? 0))
            }
            try config.checkDiffIDCount(layers: layers.count, "the image in \(path)")
            var verified: [Digest: Digest] = [:]
            try checkDiffIDs(layers.map(\.digest), config: config, staged: stage, limit: maxLayerSize, verified: &verified)
            let manifest = Manifest(mediaType: MediaType.ociManifest,
                                    config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(configBytes.count)),
                                    layers: layers)
            let bytes = try canonicalJSON(manifest)
            let d = try stage.put(bytes)
            top = Descriptor(mediaType: MediaType.ociManifest, digest: d, size: Int64(bytes.count), platform: config.platform)
            guard let n = name ?? entry.RepoTags?.first ?? (named ? nil : "") else {
                throw OCIError(.invalidArgument, "the image in \(path) has no repo tag: give it a name (rbuild load PATH NAME)")
            }
            localName = n
        } else {
            throw OCIError(.unsupported, "\(path) is neither an OCI layout (index.json) nor a Docker archive (manifest.json)")
        }

        // Everything checked: move the staged blobs into the store, then name the image.
        for d in stage.allBlobs() where !content.contains(d) {
            guard rename(stage.path(d), content.path(d)) == 0 else {
                throw OCIError(.io, "cannot move blob \(d) into the store: \(String(cString: strerror(errno)))")
            }
        }
        guard named else { return ("", top) }
        try self.tag(localName, top)
        return (try ImageStore.normalise(localName), top)
    }

    /// Which entry of a layout's index.json to use: the one with `digest`, else the one whose
    /// ref name is `tag`, else (as buildx reads `oci-layout://DIR`) the only entry or the one
    /// named `latest`. nil when `digest` names no entry (it may still be a blob of the layout).
    func chooseLayoutEntry(_ entries: [Descriptor], tag: String?, digest: Digest?, path: String) throws -> Descriptor? {
        let refName = "org.opencontainers.image.ref.name"
        if let digest { return entries.first { $0.digest == digest } }
        if let tag {
            guard let e = entries.first(where: { $0.annotations?[refName] == tag }) else {
                throw OCIError(.notFound, "\(path) has no image tagged \(tag) (it has: \(layoutNames(entries)))")
            }
            return e
        }
        if entries.count == 1 { return entries[0] }
        guard let e = entries.first(where: { $0.annotations?[refName] == "latest" }) else {
            throw OCIError(.notFound, entries.isEmpty ? "\(path) holds no image"
                : "\(path) holds \(entries.count) images and none is tagged latest: name one with :TAG or @sha256:… (it has: \(layoutNames(entries)))")
        }
        return e
    }

    func layoutNames(_ entries: [Descriptor]) -> String {
        entries.map { $0.annotations?["org.opencontainers.image.ref.name"] ?? $0.digest.description }.joined(separator: ", ")
    }

    /// Each layer (staged by this load, else already in the store) unpacks to its diff_id (in at
    /// most `limit` bytes). A staged blob was hashed on its way in, so it is decompressed without
    /// hashing its bytes a second time; one already in the store is checked as it is read.
    /// `verified`: layers already checked in this load, with the diff_id they unpacked to. The
    /// caller has checked that there is one diff_id per layer.
    func checkDiffIDs(_ layers: [Digest], config: ImageConfig, staged: ContentStore, limit: Int64,
                      verified: inout [Digest: Digest]) throws {
        for (layer, want) in zip(layers, config.rootfs.diff_ids) where verified[layer] != want {
            let blob: StoredBlob
            if staged.contains(layer) {
                blob = StoredBlob(path: staged.path(layer))
            } else if content.contains(layer) {
                blob = content.blob(layer)
            } else {
                continue
            }
            try LayerStream(blob, name: "layer \(layer)", diffID: want, limit: limit).finish()
            verified[layer] = want
        }
    }
}

/// Re-packs a root filesystem tarball (any compression libarchive reads) into a layer: entry
/// order kept, names made relative, `..` refused, times clamped to SOURCE_DATE_EPOCH, user and
/// group names dropped (ids are what counts).
public func importTarball(_ path: String, platform: Platform, store: ImageStore, options: LayerOptions = LayerOptions()) throws -> Descriptor {
    let reader = try TarReader(path: path)
    let sink = try LayerSink(store: store.content, compression: options.compression, level: options.level)
    let tar = try TarWriter(sink: sink)
    while let e = try reader.next() {
        let raw = String(cString: archive_entry_pathname(e))
        let name = try safeEntryName(raw, archive: path)
        if name.isEmpty { continue }
        let out = archive_entry_clone(e)!
        defer { archive_entry_free(out) }
        archive_entry_set_pathname(out, archive_entry_filetype(e) == AE_IFDIR ? name + "/" : name)
        if let hl = archive_entry_hardlink(e) {
            archive_entry_set_hardlink(out, try safeEntryName(String(cString: hl), archive: path))
        }
        archive_entry_set_uname(out, nil)
        archive_entry_set_gname(out, nil)
        archive_entry_unset_atime(out)
        archive_entry_unset_ctime(out)
        archive_entry_unset_birthtime(out)
        var mtime = Int64(archive_entry_mtime(e))
        if let epoch = options.sourceDateEpoch, mtime > epoch { mtime = epoch }
        archive_entry_set_mtime(out, time_t(mtime), 0)
        try tar.header(out, name)
        if archive_entry_filetype(e) == AE_IFREG && archive_entry_size(e) > 0 {
            try reader.data { try tar.data($0, name) }
        }
    }
    try tar.close()
    let (digest, size, diffID, usize) = try sink.finish()
    let layer = LayerResult(descriptor: Descriptor(mediaType: options.compression.mediaType, digest: digest, size: size),
                            diffID: diffID, uncompressedSize: usize)
    return try storeSingleLayerImage(layer: layer, platform: platform, store: store, createdBy: "rbuild import", options: options)
}

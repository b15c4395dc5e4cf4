import CArchive
import CZlib
import CZstd
import Foundation
import RBuildSystem

/// Reads tar archives (plain, gzip or zstd) with libarchive, one entry at a time. The archive's
/// (compressed) bytes come through a `BlobReader`: a store blob is hashed as libarchive reads
/// it, and checked when the archive ends (`next` returning nil) or fails, before the caller
/// commits what it unpacked.
public final class TarReader {
    let a: OpaquePointer
    let path: String
    let source: BlobReader
    /// One buffer for every entry's data (not a fresh, zeroed megabyte per file).
    let buffer: UnsafeMutableRawBufferPointer
    /// What libarchive reads the compressed stream into.
    let input: UnsafeMutableRawBufferPointer
    /// The source's failure (a corrupt blob, a read error), which libarchive only sees as -1.
    var sourceError: Error?

    public convenience init(path: String) throws {
        try self.init(StoredBlob(path: path))
    }

    public init(_ blob: StoredBlob) throws {
        path = blob.digest.map { "blob \($0)" } ?? blob.path
        source = try BlobReader(blob)
        buffer = .allocate(byteCount: 1 << 20, alignment: 16)
        input = .allocate(byteCount: 1 << 20, alignment: 16)
        a = archive_read_new()
        archive_read_support_format_tar(a)
        archive_read_support_filter_gzip(a)
        archive_read_support_filter_zstd(a)
        archive_read_support_filter_bzip2(a)
        archive_read_support_filter_xz(a)
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

/// An entry name made relative (leading `/` and `./` dropped), refusing `..` components.
public func safeEntryName(_ raw: String, archive: String) throws -> String {
    var parts: [Substring] = []
    for p in raw.split(separator: "/") where p != "." && !p.isEmpty {
        if p == ".." {
            throw OCIError(.unsafeEntry, "\(archive) has an unsafe entry \"\(raw)\": names with .. are refused")
        }
        parts.append(p)
    }
    return parts.joined(separator: "/")
}

extension ImageStore {
    /// Loads an OCI layout directory, an OCI archive or a Docker archive. `tag` picks an image by
    /// its ref name (OCI) or repo tag (Docker); `name` is the local name (default: that ref).
    /// Every blob is verified, layers are decompressed to check their diffIDs, and nothing reaches
    /// the store until all of it has been checked.
    @discardableResult
    public func load(path: String, tag: String? = nil, name: String? = nil) throws -> (name: String, descriptor: Descriptor) {
        try load(path: path, tag: tag, name: name, named: true)
    }

    /// What `load` does but the naming: the image's blobs checked and stored, its top descriptor
    /// returned (`FROM oci-layout://DIR[:TAG]`, which must not add a name to the store).
    /// `digest` picks a manifest or index by digest instead (`oci-layout://DIR@sha256:…`).
    public func ingest(path: String, tag: String? = nil, digest: Digest? = nil) throws -> Descriptor {
        try load(path: path, tag: tag, digest: digest, name: nil, named: false).descriptor
    }

    func load(path: String, tag: String?, digest: Digest? = nil, name: String?, named: Bool) throws -> (name: String, descriptor: Descriptor) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw OCIError(.notFound, "\(path) does not exist")
        }
        let staging = try temporaryDirectory(near: layout.ingest + "/x")
        defer { try? FileManager.default.removeItem(atPath: staging) }
        let stage = try ContentStore(root: staging)
        var files: [String: [UInt8]] = [:]      // small metadata files by name
        var legacy: [String: Digest] = [:]      // Docker archive layer paths → digest

        if isDir.boolValue {
            for meta in ["oci-layout", "index.json", "manifest.json", "repositories"] {
                if let d = FileManager.default.contents(atPath: path + "/" + meta) { files[meta] = [UInt8](d) }
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
                    var bytes: [UInt8] = []
                    try reader.data { bytes += $0 }
                    files[name] = bytes
                } else if name.hasSuffix("/layer.tar") || name.hasSuffix(".tar") {
                    let w = try BlobWriter(store: stage)
                    try reader.data { try w.write($0) }
                    legacy[name] = try w.commit().digest
                }
            }
        }

        /// A blob from the archive (staged) or the layout directory (ingested with verification).
        func blob(_ d: Digest, size: Int64?) throws {
            if stage.contains(d) || content.contains(d) { return }
            guard isDir.boolValue else {
                throw OCIError(.missingBlob, "\(path) refers to blob \(d), which it does not contain")
            }
            let fd = open(path + "/blobs/sha256/" + d.hex, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw OCIError(.missingBlob, "\(path) refers to blob \(d), which it does not contain") }
            defer { close(fd) }
            _ = try stage.ingest(fd: fd, expected: d, expectedSize: size)
        }
        func read(_ d: Digest) throws -> [UInt8] {
            try blob(d, size: nil)
            return stage.contains(d) ? try stage.read(d) : try content.read(d)
        }

        var top: Descriptor
        var localName: String
        if let indexBytes = files["index.json"] {
            let index = try decodeJSON(Index.self, from: indexBytes, what: "\(path)/index.json")
            var pick = try chooseLayoutEntry(index.manifests, tag: tag, digest: digest, path: path)
            if pick == nil, let digest {
                // A manifest or index inside the layout but not named in index.json.
                struct Kind: Decodable { var mediaType: String?; var manifests: [Descriptor]? }
                let bytes = try read(digest)
                let kind = try decodeJSON(Kind.self, from: bytes, what: "blob \(digest) of \(path)")
                pick = Descriptor(mediaType: kind.mediaType ?? (kind.manifests != nil ? MediaType.ociIndex : MediaType.ociManifest),
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
            // Fetch and check every blob the image needs.
            var queue = [top]
            var seen = Set<Digest>()
            var verified: [Digest: Digest] = [:]
            while let d = queue.popLast() {
                // A document, or a layer shared by several platforms, is checked once.
                guard seen.insert(d.digest).inserted else { continue }
                let bytes = try read(d.digest)
                if MediaType.isIndex(d.mediaType) {
                    queue += try decodeJSON(Index.self, from: bytes, what: "index \(d.digest)").manifests
                } else if MediaType.isManifest(d.mediaType) {
                    let m = try decodeJSON(Manifest.self, from: bytes, what: "manifest \(d.digest)")
                    let config = try decodeJSON(ImageConfig.self, from: try read(m.config.digest), what: "config \(m.config.digest)")
                    for l in m.layers { try blob(l.digest, size: l.size) }
                    try checkDiffIDs(m.layers.map(\.digest), config: config, staged: stage, verified: &verified)
                }
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
            let configBytes = try read(configDigest)
            let config = try decodeJSON(ImageConfig.self, from: configBytes, what: "config \(configDigest)")
            var layers: [Descriptor] = []
            for member in entry.Layers {
                let d = try digest(of: member)
                try blob(d, size: nil)
                let store = stage.contains(d) ? stage : content
                layers.append(Descriptor(mediaType: try detectLayerMediaType(store.path(d)), digest: d, size: store.size(d) ?? 0))
            }
            var verified: [Digest: Digest] = [:]
            try checkDiffIDs(layers.map(\.digest), config: config, staged: stage, verified: &verified)
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

    /// Each layer (staged by this load, else already in the store) unpacks to its diff_id. A staged
    /// blob was hashed on its way in, so it is decompressed without hashing its bytes a second
    /// time; one already in the store is checked as it is read.
    /// `verified`: layers already checked in this load, with the diff_id they unpacked to.
    func checkDiffIDs(_ layers: [Digest], config: ImageConfig, staged: ContentStore, verified: inout [Digest: Digest]) throws {
        guard layers.count == config.rootfs.diff_ids.count else {
            throw OCIError(.corruptBlob, "the image has \(layers.count) layers but its config lists \(config.rootfs.diff_ids.count) diff_ids")
        }
        for (layer, want) in zip(layers, config.rootfs.diff_ids) where verified[layer] != want {
            let blob: StoredBlob
            if staged.contains(layer) {
                blob = StoredBlob(path: staged.path(layer))
            } else if content.contains(layer) {
                blob = content.blob(layer)
            } else {
                continue
            }
            let got = try uncompressedDigest(blob)
            guard got == want else {
                throw OCIError(.corruptBlob, "layer \(layer) does not unpack to its diff_id: expected \(want), got \(got)")
            }
            verified[layer] = got
        }
    }
}

/// gzip, zstd or plain tar, from the first bytes.
func detectLayerMediaType(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw OCIError(.io, "cannot open \(path)") }
    defer { close(fd) }
    var magic = [UInt8](repeating: 0, count: 4)
    _ = read(fd, &magic, 4)
    if magic[0] == 0x1f && magic[1] == 0x8b { return MediaType.ociLayerGzip }
    if magic == [0x28, 0xb5, 0x2f, 0xfd] { return MediaType.ociLayerZstd }
    return MediaType.ociLayer
}

/// The sha256 of a layer's uncompressed tar (gzip and zstd recognised). A truncated or corrupt
/// stream is an error, not a short digest.
func uncompressedDigest(_ blob: StoredBlob) throws -> Digest {
    let h = SHA256()
    try decompressLayer(blob) { h.update($0) }
    return h.finish()
}

/// Streams a layer blob's uncompressed tar (gzip, zstd or plain) to `each`, the blob checked
/// against its digest as it is read. A truncated or corrupt stream is an error.
public func decompressLayer(_ blob: StoredBlob, _ each: (UnsafeRawBufferPointer) throws -> Void) throws {
    let type = try detectLayerMediaType(blob.path)
    let source = try BlobReader(blob)
    let path = blob.path
    var input = [UInt8](repeating: 0, count: 1 << 20)
    var output = [UInt8](repeating: 0, count: 1 << 20)
    let name = (path as NSString).lastPathComponent
    do {
        try decode()
    } catch let e as OCIError where e.code == .corruptBlob {
        // A stream that does not decode may be a blob that is not what its digest says: read
        // it to the end to tell, and report that first (it says what to do).
        try source.finish()
        throw e
    }

    func decode() throws {
        switch type {
        case MediaType.ociLayerGzip:
            var zs = z_stream()
            // 15 + 32: zlib detects the gzip header; multi-member streams (pigz) are followed below.
            guard inflateInit2_(&zs, 47, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { throw OCIError(.io, "zlib init failed") }
            defer { inflateEnd(&zs) }
            var ended = false
            while true {
                let n = try input.withUnsafeMutableBytes { try source.read(into: $0) }
                if n == 0 { break }
                try input.withUnsafeMutableBytes { inBuf in
                    zs.next_in = inBuf.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    zs.avail_in = UInt32(n)
                    while zs.avail_in > 0 {
                        if ended { inflateReset(&zs); ended = false }
                        let produced: Int = try output.withUnsafeMutableBytes { outBuf in
                            zs.next_out = outBuf.baseAddress!.assumingMemoryBound(to: UInt8.self)
                            zs.avail_out = UInt32(outBuf.count)
                            let rc = inflate(&zs, Z_NO_FLUSH)
                            if rc == Z_STREAM_END { ended = true } else if rc != Z_OK && rc != Z_BUF_ERROR {
                                throw OCIError(.corruptBlob, "layer \(name) is not valid gzip (zlib error \(rc))")
                            }
                            return outBuf.count - Int(zs.avail_out)
                        }
                        try output.withUnsafeBytes { try each(UnsafeRawBufferPointer(rebasing: $0[0..<produced])) }
                        if produced == 0 && !ended && zs.avail_in > 0 { continue }
                    }
                }
            }
            guard ended else { throw OCIError(.corruptBlob, "layer \(name) is truncated: the gzip stream ends early") }
        case MediaType.ociLayerZstd:
            let dctx = ZSTD_createDCtx()
            defer { ZSTD_freeDCtx(dctx) }
            var lastHint = 0
            while true {
                let n = try input.withUnsafeMutableBytes { try source.read(into: $0) }
                if n == 0 { break }
                try input.withUnsafeBytes { inBuf in
                    var zin = ZSTD_inBuffer(src: inBuf.baseAddress, size: n, pos: 0)
                    while zin.pos < zin.size {
                        let produced: Int = try output.withUnsafeMutableBytes { outBuf in
                            var zout = ZSTD_outBuffer(dst: outBuf.baseAddress, size: outBuf.count, pos: 0)
                            let rc = ZSTD_decompressStream(dctx, &zout, &zin)
                            if ZSTD_isError(rc) != 0 { throw OCIError(.corruptBlob, "layer \(name) is not valid zstd: \(String(cString: ZSTD_getErrorName(rc)))") }
                            lastHint = rc
                            return zout.pos
                        }
                        try output.withUnsafeBytes { try each(UnsafeRawBufferPointer(rebasing: $0[0..<produced])) }
                    }
                }
            }
            guard lastHint == 0 else { throw OCIError(.corruptBlob, "layer \(name) is truncated: the zstd stream ends early") }
        default:
            while true {
                let n = try input.withUnsafeMutableBytes { try source.read(into: $0) }
                if n == 0 { break }
                try input.withUnsafeBytes { try each(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            }
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

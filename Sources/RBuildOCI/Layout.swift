import CArchive
import Foundation
import RBuildSystem

/// Where `rbuild save` writes an image.
public enum ExportTarget: Sendable {
    /// An OCI image layout directory.
    case ociLayout(String)
    /// A tar of an OCI image layout.
    case ociArchive(String)
    /// `docker save`'s format: manifest.json, repositories and the blobs (`docker load`, `podman load`).
    case dockerArchive(String)
}

/// Writes bytes to a file descriptor (for archives that are not blobs).
final class FileSink: TarSink {
    let fd: Int32
    let what: String
    var failure: Error?

    /// The sink owns the file: it is closed when the TarWriter holding the sink has finished.
    init(path: String) throws {
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw OCIError(.io, "cannot create \(path): \(String(cString: strerror(errno)))") }
        what = path
    }

    deinit { close(fd) }

    func write(_ data: UnsafeRawBufferPointer) throws {
        try writeFully(fd, data, what: what)
    }
}

extension ImageStore {
    /// The blobs an image needs, top document first.
    func closure(of d: Descriptor) throws -> [Descriptor] {
        var out: [Descriptor] = [d]
        for m in try documents(of: d) {
            if m != d { out.append(m) }
            guard MediaType.isManifest(m.mediaType) else { continue }
            let manifest = try decodeManifest(try content.read(m), as: m)
            out.append(manifest.config)
            out += manifest.layers
        }
        var seen = Set<Digest>()
        return out.filter { seen.insert($0.digest).inserted }
    }

    /// Exports the image `name` (one platform of it with `platform`), as `prepare` makes it
    /// from the stored one (the layers compressed, say).
    public func save(_ name: String, platform: Platform?, to target: ExportTarget, sourceDateEpoch: Int64? = LayerOptions.environmentEpoch,
                     prepare: (Descriptor) throws -> Descriptor = { $0 }) throws {
        let full = try ImageStore.normalise(name)
        guard var top = try lookup(full) else { throw OCIError(.notFound, "no such image: \(full) (see `rbuild images`)") }
        if let platform {
            top = try manifest(of: top, platform: platform).0
        }
        try namingBlobErrors("cannot save \(full)") {
            try export(try prepare(top), name: full, to: target, sourceDateEpoch: sourceDateEpoch)
        }
    }

    /// Exports the image whose manifest or index is `top`, named `name` in the output (the
    /// layout's ref annotation, the Docker archive's RepoTags) when given. Every blob is checked
    /// as it is copied out of the store; an archive, or a layout directory that did not exist,
    /// appears only once complete, and a failure leaves nothing behind.
    public func export(_ top: Descriptor, name: String?, to target: ExportTarget, sourceDateEpoch: Int64? = LayerOptions.environmentEpoch) throws {
        switch target {
        case .ociLayout(let dir):
            if access(dir, F_OK) == 0 {
                // Into an existing directory: each blob lands whole (temp file + rename), the
                // index is written last.
                try writeLayout(top, name: name, to: dir)
            } else {
                try replaceAtomically(dir, isDirectory: true) { try writeLayout(top, name: name, to: $0) }
            }
        case .ociArchive(let file):
            let files = ["oci-layout": layoutMarker, "index.json": try layoutIndex(top, name: name)]
            try writeArchive(file, files: files, blobs: try closure(of: top), mtime: sourceDateEpoch ?? 0)
        case .dockerArchive(let file):
            let manifests = try platformManifests(of: top)
            guard manifests.count == 1 else {
                throw OCIError(.unsupported, "docker archives hold one platform, and \(name ?? top.digest.description) has \(manifests.count) (\(manifests.compactMap { $0.platform?.description }.joined(separator: ", "))): pass --platform, or save as type=oci")
            }
            let (_, manifest) = try self.manifest(of: manifests[0], platform: nil)
            struct Entry: Encodable { var Config: String; var RepoTags: [String]; var Layers: [String] }
            let entry = Entry(Config: "blobs/sha256/" + manifest.config.digest.hex, RepoTags: name.map { [$0] } ?? [],
                              Layers: manifest.layers.map { "blobs/sha256/" + $0.digest.hex })
            var files = ["manifest.json": try canonicalJSON([entry])]
            if let name {
                let (repo, tag) = splitName(name)
                files["repositories"] = try canonicalJSON([repo: [tag: manifest.layers.last?.digest.hex ?? manifest.config.digest.hex]])
            }
            try writeArchive(file, files: files, blobs: [manifest.config] + manifest.layers, mtime: sourceDateEpoch ?? 0)
        }
    }

    var layoutMarker: [UInt8] { Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8) }

    /// A layout's index.json: the one image, with its name as ref annotations.
    func layoutIndex(_ top: Descriptor, name: String?) throws -> [UInt8] {
        var entry = top
        if let name {
            let (_, tag) = splitName(name)
            // Kept with the entry's own (`--annotation index-descriptor:…`).
            entry.annotations = (top.annotations ?? [:]).merging(["org.opencontainers.image.ref.name": tag, "io.containerd.image.name": name]) { _, new in new }
        }
        return try canonicalJSON(Index(mediaType: MediaType.ociIndex, manifests: [entry]))
    }

    func writeLayout(_ top: Descriptor, name: String?, to dir: String) throws {
        try makeDirectory(dir + "/blobs/sha256")
        for d in try closure(of: top) where access(dir + "/blobs/sha256/" + d.digest.hex, F_OK) != 0 {
            if let recipe = content.packableRecipe(d.digest) {
                // A layer kept as its snapshot (`LayerRecipe`): packed straight into the output.
                try replaceAtomically(dir + "/blobs/sha256/" + d.digest.hex, isDirectory: false) { tmp in
                    let out = try FileSink(path: tmp)
                    try content.pack(d.digest, recipe: recipe) { try out.write($0) }
                }
                continue
            }
            // A copy (a reflink where the filesystem can), never a hard link: the output must
            // not share an inode with the store (an edit of one would corrupt the other), and
            // the bytes are checked on the way.
            try content.copy(content.blob(d), to: dir + "/blobs/sha256/" + d.digest.hex)
        }
        try writeFile(dir + "/oci-layout", layoutMarker)
        try writeFile(dir + "/index.json", try layoutIndex(top, name: name))
    }

    /// A deterministic tar of an image layout (or Docker archive): `blobs/sha256/…` streamed from
    /// the store through their checks, then `files`, sorted, owner 0:0, every mtime `mtime`.
    func writeArchive(_ file: String, files: [String: [UInt8]], blobs: [Descriptor], mtime: Int64) throws {
        try replaceAtomically(file, isDirectory: false) { tmp in
            let tar = try TarWriter(sink: FileSink(path: tmp))
            func header(_ name: String, directory: Bool, size: Int64) throws {
                let e = archive_entry_new()!
                defer { archive_entry_free(e) }
                archive_entry_set_uid(e, 0)
                archive_entry_set_gid(e, 0)
                archive_entry_set_mtime(e, time_t(mtime), 0)
                archive_entry_set_pathname(e, name)
                archive_entry_set_filetype(e, directory ? AE_IFDIR : AE_IFREG)
                archive_entry_set_perm(e, directory ? 0o755 : 0o644)
                if !directory { archive_entry_set_size(e, la_int64_t(size)) }
                try tar.header(e, name)
            }
            try header("blobs/", directory: true, size: 0)
            try header("blobs/sha256/", directory: true, size: 0)
            var seen = Set<Digest>()
            for d in blobs.sorted(by: { $0.digest < $1.digest }) where seen.insert(d.digest).inserted {
                let name = "blobs/sha256/" + d.digest.hex
                if let recipe = content.packableRecipe(d.digest) {
                    // Packed from its snapshot (`LayerRecipe`) into the archive, checked
                    // against its digest and size (a failure removes the whole archive).
                    try header(name, directory: false, size: recipe.size)
                    try content.pack(d.digest, recipe: recipe) { try tar.data($0, name) }
                    continue
                }
                let reader = try BlobReader(content.blob(d))
                try header(name, directory: false, size: reader.fileSize)
                try reader.forEach { try tar.data($0, name) }
            }
            for (name, bytes) in files.sorted(by: { $0.key < $1.key }) {
                try header(name, directory: false, size: Int64(bytes.count))
                try bytes.withUnsafeBytes { try tar.data($0, name) }
            }
            try tar.close()
        }
    }
}

/// `repo:tag` → (repo, tag).
func splitName(_ name: String) -> (String, String) {
    let slash = name.lastIndex(of: "/") ?? name.startIndex
    if let colon = name[slash...].lastIndex(of: ":") {
        return (String(name[..<colon]), String(name[name.index(after: colon)...]))
    }
    return (name, "latest")
}

func temporaryDirectory(near file: String) throws -> String {
    let parent = (file as NSString).deletingLastPathComponent
    guard let p = makeTemporaryDirectory(prefix: (parent.isEmpty ? "." : parent) + "/.rbuild-tmp-") else {
        throw OCIError(.io, "cannot create a temporary directory beside \(file): \(String(cString: strerror(errno)))")
    }
    return p
}

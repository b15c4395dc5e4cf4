import CArchive
import Foundation
import RBuildRuntime

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
    var failure: Error?

    init(path: String) throws {
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw OCIError(.io, "cannot create \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    func write(_ data: UnsafeRawBufferPointer) throws {
        var off = 0
        while off < data.count {
            let n = Foundation.write(fd, data.baseAddress! + off, data.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw OCIError(.io, "writing the archive failed: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }
}

extension ImageStore {
    /// The blobs an image needs, top document first.
    func closure(of d: Descriptor) throws -> [Descriptor] {
        var out: [Descriptor] = [d]
        for m in try documents(of: d) {
            if m != d { out.append(m) }
            guard MediaType.isManifest(m.mediaType) else { continue }
            let manifest = try decodeJSON(Manifest.self, from: try content.read(m.digest), what: "manifest \(m.digest)")
            out.append(manifest.config)
            out += manifest.layers
        }
        var seen = Set<Digest>()
        return out.filter { seen.insert($0.digest).inserted }
    }

    /// Exports the image `name` (one platform of it with `platform`).
    public func save(_ name: String, platform: Platform?, to target: ExportTarget, sourceDateEpoch: Int64? = LayerOptions.environmentEpoch) throws {
        let full = try ImageStore.normalise(name)
        guard var top = try lookup(full) else { throw OCIError(.notFound, "no such image: \(full) (see `rbuild images`)") }
        if let platform {
            top = try manifest(of: top, platform: platform).0
        }
        try export(top, name: full, to: target, sourceDateEpoch: sourceDateEpoch)
    }

    /// Exports the image whose manifest or index is `top`, named `name` in the output (the
    /// layout's ref annotation, the Docker archive's RepoTags) when given.
    public func export(_ top: Descriptor, name: String?, to target: ExportTarget, sourceDateEpoch: Int64? = LayerOptions.environmentEpoch) throws {
        switch target {
        case .ociLayout(let dir):
            try writeLayout(top, name: name, to: dir)
        case .ociArchive(let file):
            let tmp = try temporaryDirectory(near: file)
            defer { try? FileManager.default.removeItem(atPath: tmp) }
            try writeLayout(top, name: name, to: tmp)
            try tarDirectory(tmp, to: file, mtime: sourceDateEpoch ?? 0)
        case .dockerArchive(let file):
            let manifests = try platformManifests(of: top)
            guard manifests.count == 1 else {
                throw OCIError(.unsupported, "docker archives hold one platform, and \(name ?? top.digest.description) has \(manifests.count) (\(manifests.compactMap { $0.platform?.description }.joined(separator: ", "))): pass --platform, or save as type=oci")
            }
            let (_, manifest) = try self.manifest(of: manifests[0], platform: nil)
            let tmp = try temporaryDirectory(near: file)
            defer { try? FileManager.default.removeItem(atPath: tmp) }
            try makeDirectory(tmp + "/blobs/sha256")
            for d in [manifest.config] + manifest.layers { try copyBlob(d.digest, to: tmp + "/blobs/sha256/" + d.digest.hex) }
            struct Entry: Encodable { var Config: String; var RepoTags: [String]; var Layers: [String] }
            let entry = Entry(Config: "blobs/sha256/" + manifest.config.digest.hex, RepoTags: name.map { [$0] } ?? [],
                              Layers: manifest.layers.map { "blobs/sha256/" + $0.digest.hex })
            try writeFile(tmp + "/manifest.json", try canonicalJSON([entry]))
            if let name {
                let (repo, tag) = splitName(name)
                try writeFile(tmp + "/repositories", try canonicalJSON([repo: [tag: manifest.layers.last?.digest.hex ?? manifest.config.digest.hex]]))
            }
            try tarDirectory(tmp, to: file, mtime: sourceDateEpoch ?? 0)
        }
    }

    func writeLayout(_ top: Descriptor, name: String?, to dir: String) throws {
        try makeDirectory(dir + "/blobs/sha256")
        for d in try closure(of: top) {
            try copyBlob(d.digest, to: dir + "/blobs/sha256/" + d.digest.hex)
        }
        try writeFile(dir + "/oci-layout", Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8))
        var entry = top
        if let name {
            let (_, tag) = splitName(name)
            entry.annotations = ["org.opencontainers.image.ref.name": tag, "io.containerd.image.name": name]
        }
        try writeFile(dir + "/index.json", try canonicalJSON(Index(mediaType: MediaType.ociIndex, manifests: [entry])))
    }

    func copyBlob(_ d: Digest, to path: String) throws {
        if access(path, F_OK) == 0 { return }
        // A hard link costs nothing on the same filesystem; otherwise copy.
        if link(content.path(d), path) == 0 { return }
        do {
            try FileManager.default.copyItem(atPath: content.path(d), toPath: path)
        } catch {
            throw OCIError(.io, "cannot copy blob \(d) to \(path): \(error.localizedDescription)")
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

/// A deterministic tar of a directory: sorted entries, fixed owner 0:0 and mtime.
func tarDirectory(_ dir: String, to file: String, mtime: Int64) throws {
    let sink = try FileSink(path: file)
    let tar = try TarWriter(sink: sink)
    let rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard rootfd >= 0 else { throw OCIError(.io, "cannot open \(dir)") }
    defer { close(rootfd) }
    var buf = [UInt8](repeating: 0, count: 1 << 20)
    func walk(_ dirfd: Int32, _ prefix: String) throws {
        for name in try sortedNames(dirfd) {
            let rel = prefix.isEmpty ? name : prefix + "/" + name
            var st = stat()
            guard fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            let e = archive_entry_new()!
            defer { archive_entry_free(e) }
            archive_entry_set_uid(e, 0)
            archive_entry_set_gid(e, 0)
            archive_entry_set_mtime(e, time_t(mtime), 0)
            if st.st_mode & S_IFMT == S_IFDIR {
                archive_entry_set_pathname(e, rel + "/")
                archive_entry_set_filetype(e, AE_IFDIR)
                archive_entry_set_perm(e, 0o755)
                try tar.header(e, rel)
                let sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard sub >= 0 else { throw OCIError(.io, "cannot open \(dir)/\(rel)") }
                defer { close(sub) }
                try walk(sub, rel)
            } else if st.st_mode & S_IFMT == S_IFREG {
                archive_entry_set_pathname(e, rel)
                archive_entry_set_filetype(e, AE_IFREG)
                archive_entry_set_perm(e, 0o644)
                archive_entry_set_size(e, la_int64_t(st.st_size))
                try tar.header(e, rel)
                let fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                guard fd >= 0 else { throw OCIError(.io, "cannot open \(dir)/\(rel)") }
                defer { close(fd) }
                while true {
                    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { break }
                    try buf.withUnsafeBytes { try tar.data(UnsafeRawBufferPointer(rebasing: $0[0..<n]), rel) }
                }
            }
        }
    }
    try walk(rootfd, "")
    try tar.close()
}

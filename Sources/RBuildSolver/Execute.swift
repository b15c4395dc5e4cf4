import Foundation
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSnapshots
import RBuildSystem

/// A layer being made by hand (COPY, ADD, WORKDIR): a private directory whose tree is the layer,
/// with the owners each entry must be recorded with.
final class LayerStaging: @unchecked Sendable {
    let dir: String
    let fd: Int32
    var owners: [String: (uid: UInt32, gid: UInt32)] = [:]

    init(in parent: String) throws {
        guard let d = makeTemporaryDirectory(prefix: parent + "/layer-") else {
            throw SolveError("cannot create a directory in \(parent): \(String(cString: strerror(errno)))")
        }
        dir = d
        fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    }

    deinit {
        close(fd)
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Creates `comps` as directories. Those the base root has keep its mode, owner and mtime (so
    /// the layer does not change them); new ones are 0755 and owned by `owner`. Returns the fd of
    /// the last one (the caller closes it).
    func makeDirectories(_ comps: [String], base: SnapshotView, mapping: IDMapping,
                         owner: (uid: UInt32, gid: UInt32) = (0, 0)) throws -> Int32 {
        var cur = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        var rel = ""
        for (i, c) in comps.enumerated() {
            rel = rel.isEmpty ? c : rel + "/" + c
            var st = stat()
            if fstatat(cur, c, &st, AT_SYMLINK_NOFOLLOW) != 0 {
                mkdirat(cur, c, 0o755)
                if let (_, e) = try base.lookup(Array(comps[...i])), e.type == S_IFDIR {
                    fchmodat(cur, c, e.stat.st_mode & 0o7777, 0)
                    var times = [e.stat.st_atim, e.stat.st_mtim]
                    utimensat(cur, c, &times, AT_SYMLINK_NOFOLLOW)
                    owners[rel] = (mapping.insideID(host: e.stat.st_uid, uid: true) ?? 65534,
                                   mapping.insideID(host: e.stat.st_gid, uid: false) ?? 65534)
                } else {
                    fchmodat(cur, c, 0o755, 0)
                    owners[rel] = owner
                }
            }
            let next = openat(cur, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            close(cur)
            guard next >= 0 else { throw SolveError("cannot create /\(rel): \(String(cString: strerror(errno)))") }
            cur = next
        }
        return cur
    }

    /// Hands the tree, now written as `result`'s layer, to the snapshotter as that layer's
    /// snapshot on `base` (the overlay kinds move it in instead of unpacking the blob again).
    func adopt(_ result: CachedResult, snapshotter: any Snapshotter, store: ContentStore, on base: Snapshot) throws -> Snapshot? {
        guard let layer = result.layer, let diffID = result.diffID else { return nil }
        var records: [Ownership.Record] = []
        for (path, o) in owners where o != (0, 0) {
            var st = stat()
            guard lstat(dir + "/" + path, &st) == 0, (st.st_mode & S_IFMT) != S_IFLNK else { continue }
            records.append(Ownership.Record(path: path, uid: o.uid, gid: o.gid, mode: UInt32(st.st_mode & 0o7777)))
        }
        let made = try snapshotter.adopt(dir, layer: store.blob(layer), diffID: diffID, name: layer.digest.description,
                                         owners: records, on: base)
        if let (options, size) = packed {
            try recordRecipe(diffID, snapshot: made, size: size, options: options, snapshotter: snapshotter, store: store)
        }
        return made
    }

    /// How `layer` packed the tree when it kept no blob (the snapshotter keeps the tree).
    var packed: (LayerOptions, Int64)?

    /// Packs the tree as the step's layer (see `packLayer`).
    func layer(store: ContentStore, options: LayerOptions, snapshotter: any Snapshotter) throws -> CachedResult {
        var opts = options
        opts.owners = owners
        let uid = getuid(), gid = getgid()
        opts.ownership = { u, g in (u == uid ? 0 : u, g == gid ? 0 : g) }
        let (result, kept) = try packLayer(store: store, options: opts, snapshotter: snapshotter) {
            try writeLayer(fromDirectory: dir, store: store, options: $0)
        }
        packed = kept.map { ($0, result.uncompressedSize) }
        return result.entries == 0 ? CachedResult(layer: nil, diffID: nil) : CachedResult(layer: result.descriptor, diffID: result.diffID)
    }
}

/// Packs a step's layer with `write`. Where the snapshotter keeps the step's tree as the layer's
/// snapshot, the tar is only hashed — one copy of the bytes in the state dir; the blob is made
/// from the tree when an export asks (`LayerRecipe`) — and the options it was packed with are
/// returned for the recipe; else (or when the snapshotter already holds this layer as one
/// unpacked from a blob) the blob is stored as it is packed.
func packLayer(store: ContentStore, options: LayerOptions, snapshotter: any Snapshotter,
               _ write: (LayerOptions) throws -> LayerResult) throws -> (LayerResult, LayerOptions?) {
    var opts = options
    opts.storesBlob = !(opts.compression == .none && snapshotter.keepsLayerTrees)
    var result = try write(opts)
    if !opts.storesBlob && result.entries > 0 && !snapshotter.keepsOwnTree(result.diffID) && !store.contains(result.diffID) {
        opts.storesBlob = true
        result = try write(opts)
    }
    return (result, opts.storesBlob ? nil : opts)
}

/// After `commit`/`adopt` made `snapshot`, whose top directory is the tree a layer was packed
/// from with `options`: records how to pack it again.
func recordRecipe(_ diffID: Digest, snapshot: Snapshot?, size: Int64, options: LayerOptions,
                  snapshotter: any Snapshotter, store: ContentStore) throws {
    guard let dir = snapshot?.directories.last else { return }
    do {
        try store.recordRecipe(diffID, directory: dir, size: size, options: options, idMapping: snapshotter.mapping.mode)
    } catch let e as OCIError {
        throw SolveError(e.message)
    }
}

/// `/a/./b/../c` → `/a/c`.
package func cleanPath(_ path: String) -> String {
    var out: [Substring] = []
    for c in pathComponents(path) {
        if c == "." { continue }
        if c == ".." { if !out.isEmpty { out.removeLast() }; continue }
        out.append(c)
    }
    return "/" + out.joined(separator: "/")
}

extension UserDatabase {
    /// `spec` looked up in a snapshot's /etc/passwd and /etc/group as the sandbox sees them: the
    /// layers merged, whiteouts honoured, symlinks resolved inside the view.
    static func resolve(_ spec: UserSpec, in view: SnapshotView) throws -> ResolvedUser {
        try resolve(spec) { try view.readFile($0) }
    }
}

/// One source of a copy, found: where it is, and its path in a local directory (for .dockerignore).
struct CopyMatch: Sendable {
    var view: SnapshotView
    /// Canonical components inside the view (empty: its root).
    var comps: [String]
    /// Its path relative to a local directory's root, when it comes from one.
    var localRel: String?
    /// A download: never extracted, even when it is an archive.
    var downloaded = false
}

extension Solver {
    /// Runs a vertex's op on `root` (input 0, materialised) with its other inputs materialised in
    /// `sources` (those that are not files read in place); returns what it wrote and, when it
    /// wrote a layer, the snapshot of root plus that layer.
    func execute(_ vertex: Vertex, on root: Snapshot, sources: [Int: Snapshot], step: ProgressReporter.Step) throws -> (CachedResult, Snapshot?) {
        switch vertex.op {
        case .exec(let e): return try run(e, vertex: vertex, on: root, sources: sources, step: step)
        case .file(.mkdir(let path, let owner)): return try mkdir(path, owner: owner, on: root)
        case .file(.copy(let c)): return try copy(c, vertex: vertex, on: root, sources: sources)
        case .source: throw SolveError("internal: a source is not executed")
        }
    }

    // MARK: - exec

    func run(_ e: ExecOp, vertex: Vertex, on root: Snapshot, sources: [Int: Snapshot],
             step: ProgressReporter.Step) throws -> (CachedResult, Snapshot?) {
        let active = try snapshotter.prepare(root)
        var kept = false
        defer { if !kept { try? snapshotter.remove(active) } }
        var spec = SandboxSpec(root: snapshotter.mounts(active), argv: e.args)
        spec.env = e.env
        spec.user = try UserSpec.parse(e.user)
        let base = SnapshotView(root)
        spec.readRootFile = { try base.readFile($0) }
        spec.workdir = e.cwd
        spec.network = e.network
        spec.extraHosts = e.extraHosts
        spec.shmSize = e.shmSize
        spec.ulimits = e.ulimits
        spec.hostname = "buildkitsandbox"
        spec.isolation = isolation
        if let arch = Architecture(platform: e.platform) { spec.architecture = arch }
        let mounts = try prepareMounts(e, vertex: vertex, root: root, sources: sources, user: spec.user)
        defer { mounts.release(snapshotter) }
        spec.extraMounts = mounts.mounts
        spec.env += mounts.env
        let stubs = try missingMountPoints(spec.rootMountPoints, in: base)
        let (status, tail) = try runCapturing(spec, stdin: e.stdin, step: step)
        guard status == 0 else {
            let o = vertex.origin ?? Origin(file: "", line: 0, instruction: e.args.joined(separator: " "))
            throw BuildError(file: o.file, line: o.line, instruction: o.instruction,
                             message: "process \"\(e.args.joined(separator: " "))\" did not complete successfully: exit code: \(status)",
                             outputTail: tail)
        }
        try removeMountPoints(stubs, active: active, base: base)
        let (layer, packed) = try packLayer(store: store.content, options: layerOptions, snapshotter: snapshotter) {
            try snapshotter.diff(active, store: store.content, options: $0)
        }
        if layer.entries == 0 { return (CachedResult(layer: nil, diffID: nil), nil) }
        let made = try snapshotter.commit(active, diffID: layer.diffID)
        kept = true
        if let packed {
            try recordRecipe(layer.diffID, snapshot: made, size: layer.uncompressedSize, options: packed,
                             snapshotter: snapshotter, store: store.content)
        }
        return (CachedResult(layer: layer.descriptor, diffID: layer.diffID), made)
    }

    /// Runs the sandbox with its output read line by line into the step; returns the exit
    /// status and the last lines.
    func runCapturing(_ spec: SandboxSpec, stdin: [UInt8]?, step: ProgressReporter.Step) throws -> (Int32, [String]) {
        var spec = spec
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SolveError("pipe: \(String(cString: strerror(errno)))") }
        let (r, w) = (fds[0], fds[1])
        _ = fcntl(r, F_SETFD, FD_CLOEXEC)
        var input: Int32
        if let stdin {
            let path = tmpRoot + "/stdin-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            guard let fd = Optional(open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)), fd >= 0 else {
                throw SolveError("cannot create \(path): \(String(cString: strerror(errno)))")
            }
            unlink(path)
            _ = stdin.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            lseek(fd, 0, SEEK_SET)
            input = fd
        } else {
            input = open("/dev/null", O_RDONLY | O_CLOEXEC)
        }
        defer { close(input) }
        spec.stdin = input
        spec.stdout = w
        spec.stderr = w
        final class Tail: @unchecked Sendable { var lines: [String] = [] }
        let tail = Tail()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            var pending = [UInt8]()
            var buf = [UInt8](repeating: 0, count: 65536)
            func emit(_ bytes: ArraySlice<UInt8>) {
                let line = String(decoding: bytes, as: UTF8.self)
                step.output(line)
                tail.lines.append(line)
                if tail.lines.count > 20 { tail.lines.removeFirst(tail.lines.count - 20) }
            }
            while true {
                let n = read(r, &buf, buf.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                pending += buf[0..<n]
                while let nl = pending.firstIndex(of: 10) {
                    emit(pending[..<nl])
                    pending.removeSubrange(...nl)
                }
            }
            if !pending.isEmpty { emit(pending[...]) }
            close(r)
            done.signal()
        }
        let status: Int32
        do {
            status = try Sandbox.run(spec)
        } catch {
            close(w)
            done.wait()
            throw error
        }
        close(w)
        done.wait()
        return (status, tail.lines)
    }

    // MARK: - mkdir

    /// Like BuildKit's WORKDIR: the directory is made (owned by `owner`) when it does not exist.
    func mkdir(_ dir: String, owner user: String?, on root: Snapshot) throws -> (CachedResult, Snapshot?) {
        let view = SnapshotView(root)
        let comps = try view.resolve(dir, followLast: true)
        if comps.isEmpty { return (CachedResult(layer: nil, diffID: nil), nil) }
        if let (_, e) = try view.lookup(comps), e.type == S_IFDIR { return (CachedResult(layer: nil, diffID: nil), nil) }
        var owner: (UInt32, UInt32) = (0, 0)
        if let user {
            let u = try UserDatabase.resolve(try UserSpec.parse(user), in: view)
            owner = (u.uid, u.gid)
        }
        let staging = try LayerStaging(in: tmpRoot)
        close(try staging.makeDirectories(comps, base: view, mapping: snapshotter.mapping, owner: owner))
        let result = try staging.layer(store: store.content, options: layerOptions, snapshotter: snapshotter)
        return (result, try staging.adopt(result, snapshotter: snapshotter, store: store.content, on: root))
    }

    // MARK: - copy

    func copy(_ c: CopyAction, vertex: Vertex, on baseSnapshot: Snapshot, sources: [Int: Snapshot]) throws -> (CachedResult, Snapshot?) {
        let kw = c.keyword
        let excludes = c.excludes.isEmpty ? nil : DockerIgnore(c.excludes.joined(separator: "\n"))
        var matches: [(CopyMatch, keepOwners: Bool, ignore: DockerIgnore?)] = []
        var holders: [LayerStaging] = []   // inline files live as long as the step
        for src in c.sources {
            let input = vertex.inputs[src.input]
            switch input.op {
            case .source(.local(_, let path, let ex)):
                for p in src.paths {
                    let (found, ignore) = try localMatches(path: path, excludes: ex, pattern: p, keyword: kw, what: src.what)
                    matches += found.map { ($0, false, ignore) }
                }
            case .source(.inline(let files)):
                let tmp = try LayerStaging(in: tmpRoot)
                holders.append(tmp)
                for f in files {
                    guard writeFileAt(tmp.fd, f.name, f.content, mode: 0o644) else {
                        throw SolveError("cannot write the here-document \(f.name)")
                    }
                    matches.append((CopyMatch(view: SnapshotView(directory: tmp.dir), comps: [f.name]), false, nil))
                }
            case .source(.http):
                let d = try downloaded(input)
                matches.append((CopyMatch(view: SnapshotView(directory: d.staging.dir), comps: [d.name], downloaded: !c.unpackDownloads),
                                false, nil))
            case .source(.git(let g)):
                // The checkout's files (or its subdir's, resolved inside it) go into the
                // destination as a directory's do; archives in it stay archives.
                let view = SnapshotView(directory: try gitCheckout(input))
                let comps = try view.resolve("/" + g.subdir, followLast: true)
                guard try view.directory(comps) != nil else {
                    throw SolveError("\(kw) \(g.display): \"\(g.subdir)\" is not a directory in the repository")
                }
                matches.append((CopyMatch(view: view, comps: comps, downloaded: true), false, nil))
            default:
                guard let snap = sources[src.input] else { throw SolveError("internal: input \(src.input) not materialised") }
                let view = SnapshotView(snap)
                for p in src.paths {
                    matches += try match(view, p, what: src.what).map { ($0, true, nil) }
                }
            }
        }
        if matches.count > 1 && !c.destinationIsDirectory {
            throw SolveError("When using \(kw) with more than one source file, the destination must be a directory and end with a /")
        }
        let base = SnapshotView(baseSnapshot)
        var owner: (uid: UInt32, gid: UInt32)?
        if let chown = c.chown { owner = try resolveChown(chown, base: base) }
        let destComps = try base.resolve(c.destination, followLast: true)
        let existing = destComps.isEmpty ? nil : try base.lookup(destComps)
        let existingDir = destComps.isEmpty || existing?.entry.type == S_IFDIR
        var anyDir = false
        for (m, _, _) in matches {
            if m.comps.isEmpty { anyDir = true; continue }
            if let (_, e) = try m.view.lookup(m.comps), e.type == S_IFDIR || (c.unpackArchives && !m.downloaded && isArchive(e)) {
                anyDir = true
            }
        }
        let intoDir = c.destinationIsDirectory || existingDir || anyDir || matches.count > 1
        let staging = try LayerStaging(in: tmpRoot)
        let dirComps = intoDir ? destComps : Array(destComps.dropLast())
        let dfd = try staging.makeDirectories(dirComps, base: base, mapping: snapshotter.mapping, owner: owner ?? (0, 0))
        defer { close(dfd) }
        let prefix = dirComps.joined(separator: "/")
        func join(_ a: String, _ b: String) -> String { a.isEmpty ? b : a + "/" + b }
        // Every path written, with the owner its layer records: --chown's, else the source's (a
        // stage, an image, an archive), else root's (a local directory).
        var recorded: [String: (uid: UInt32, gid: UInt32)] = [:]
        for (m, keepOwners, ignore) in matches {
            var copier = ViewCopier(view: m.view, mapping: snapshotter.mapping, destRoot: staging.fd)
            copier.mode = c.chmod
            let localRel = m.localRel
            copier.include = { rel in
                if let localRel, let ignore, ignore.matches(join(localRel, rel)) { return false }
                if let excludes, excludes.matches(rel) { return false }
                return true
            }
            if let (parent, e) = try m.view.lookup(m.comps), e.type != S_IFDIR {
                if c.unpackArchives && !m.downloaded && isArchive(e) {
                    let records = try unpackLayer(StoredBlob(path: "/proc/self/fd/\(e.dirfd)/\(e.name)"), into: staging.dir + "/" + prefix,
                                                  layerName: e.name, whiteouts: .apply)
                    for r in records { recorded[join(prefix, r.path)] = owner ?? (r.uid, r.gid) }
                    continue
                }
                let target = intoDir ? e.name : destComps.last!
                try copier.copy(e, in: parent, srcRel: "", to: dfd, name: target, destRel: join(prefix, target))
            } else if let dir = try m.view.directory(m.comps) {
                for e in try m.view.entries(dir) {
                    if let include = copier.include, !include(e.name) { continue }
                    try copier.copy(e, in: dir, srcRel: e.name, to: dfd, name: e.name, destRel: join(prefix, e.name))
                }
            } else {
                throw SolveError("\(kw) failed: \"/\(m.comps.joined(separator: "/"))\" not found")
            }
            for p in copier.copied { recorded[p] = owner ?? (keepOwners ? copier.owners[p] : nil) ?? (0, 0) }
        }
        for (p, o) in recorded { staging.owners[p] = o }
        let result = try staging.layer(store: store.content, options: layerOptions, snapshotter: snapshotter)
        let made = try staging.adopt(result, snapshotter: snapshotter, store: store.content, on: baseSnapshot)
        withExtendedLifetime(holders) {}
        return (result, made)
    }

    /// The entries a source pattern names in a view: a path (symlinks followed inside the view)
    /// or a glob (`*`, `?`, `[…]` within one path component, as Go's filepath.Match).
    func match(_ view: SnapshotView, _ pattern: String, what: String, local: Bool = false) throws -> [CopyMatch] {
        let clean = cleanPath("/" + pattern)
        let comps = pathComponents(clean).map(String.init)
        let hasGlob = comps.contains { $0.contains(where: { "*?[".contains($0) }) }
        if !hasGlob {
            let resolved = try view.resolve(clean, followLast: true)
            let exists = try resolved.isEmpty || view.lookup(resolved) != nil
            guard exists else {
                throw SolveError("\"\(pattern)\" not found in the \(what)")
            }
            return [CopyMatch(view: view, comps: resolved, localRel: local ? resolved.joined(separator: "/") : nil)]
        }
        var found: [[String]] = [[]]
        for c in comps {
            var next: [[String]] = []
            for prefix in found {
                if c.contains(where: { "*?[".contains($0) }) {
                    guard let dir = try view.directory(prefix) else { continue }
                    for e in try view.entries(dir) where fnmatch(c, e.name, 0) == 0 {
                        next.append(try view.resolve("/" + (prefix + [e.name]).joined(separator: "/"), followLast: true))
                    }
                } else {
                    let r = try view.resolve("/" + (prefix + [c]).joined(separator: "/"), followLast: true)
                    if (try view.lookup(r)) != nil { next.append(r) }
                }
            }
            found = next
        }
        guard !found.isEmpty else { throw SolveError("no source files were specified: \"\(pattern)\" matches nothing in the \(what)") }
        return found.map { CopyMatch(view: view, comps: $0, localRel: local ? $0.joined(separator: "/") : nil) }
    }

    /// `--chown=USER[:GROUP]`: names from the base's /etc/passwd and /etc/group; a user alone
    /// gives the group of the same number, as Docker documents.
    func resolveChown(_ text: String, base: SnapshotView) throws -> (uid: UInt32, gid: UInt32) {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        func id(_ name: String, file: String, field: Int) throws -> UInt32 {
            if let n = UInt32(name) { return n }
            let content = String(decoding: try base.readFile(file) ?? [], as: UTF8.self)
            for line in content.split(separator: "\n") {
                let f = line.split(separator: ":", omittingEmptySubsequences: false)
                if f.count > field, f[0] == name, let n = UInt32(f[field]) { return n }
            }
            throw SolveError("--chown=\(text): no \(file == "/etc/passwd" ? "user" : "group") named \(name) in the image's \(file)")
        }
        let uid = try id(parts[0], file: "/etc/passwd", field: 2)
        let gid = parts.count > 1 ? try id(parts[1], file: "/etc/group", field: 2) : uid
        return (uid, gid)
    }

    /// A tar archive (plain, gzip, bzip2, xz or zstd), which ADD unpacks.
    func isArchive(_ e: SnapshotView.Entry) -> Bool {
        guard e.type == S_IFREG else { return false }
        let fd = openat(e.dirfd, e.name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 512)
        let n = read(fd, &head, head.count)
        guard n >= 4 else { return false }
        if head[0] == 0x1f && head[1] == 0x8b { return true }
        if head[0] == 0x42 && head[1] == 0x5a && head[2] == 0x68 { return true }
        if head[0...3] == [0xfd, 0x37, 0x7a, 0x58] { return true }
        if head[0...3] == [0x28, 0xb5, 0x2f, 0xfd] { return true }
        return n >= 262 && Array(head[257..<262]) == Array("ustar".utf8)
    }

    /// ADD URL: fetches into `tmp` (streamed to the file, hashed as it arrives), named by the URL's
    /// last path component, mode 0600 and the Last-Modified time as its mtime; `--checksum` is
    /// verified.
    func fetch(_ url: String, into tmp: LayerStaging, checksum want: Digest?) throws -> (String, Digest) {
        guard let u = URL(string: url) else { throw SolveError("ADD \(url): not a valid URL") }
        var name = u.lastPathComponent
        if name.isEmpty || name == "/" { name = "__unnamed__" }
        let fd = openat(tmp.fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SolveError("ADD \(url): cannot create \(name): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let hash = SHA256()
        let r: HTTP.Response
        do {
            r = try HTTP.perform("GET", url) { _, bytes in
                hash.update(bytes)
                guard write(fd, bytes.baseAddress, bytes.count) == bytes.count else {
                    throw SolveError("ADD \(url): writing \(name) failed: \(String(cString: strerror(errno)))")
                }
            }
        } catch let e as HTTP.TransportError {
            throw SolveError("ADD \(url): download failed: \(e)")
        }
        guard (200..<300).contains(r.status) else { throw SolveError("ADD \(url): the server answered \(r.status)") }
        let digest = hash.finish()
        if let want {
            guard want == digest else {
                throw SolveError("ADD \(url): checksum mismatch: expected \(want), got \(digest)")
            }
        }
        if let lm = r.header("Last-Modified") {
            let f = DateFormatter()
            f.locale = Locale(identifier: "en_US_POSIX")
            f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
            if let date = f.date(from: lm) {
                var times = [timespec(tv_sec: Int(date.timeIntervalSince1970), tv_nsec: 0),
                             timespec(tv_sec: Int(date.timeIntervalSince1970), tv_nsec: 0)]
                futimens(fd, &times)
            }
        }
        return (name, digest)
    }
}

func writeFileAt(_ dirfd: Int32, _ name: String, _ bytes: [UInt8], mode: mode_t) -> Bool {
    let fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    let ok = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count
    fchmod(fd, mode)
    return ok
}

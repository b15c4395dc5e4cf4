import Foundation

/// One source of a COPY or ADD, found: where it is and how the cache key names it.
struct CopyMatch {
    var view: SnapshotView
    /// Canonical components inside the view (empty: its root).
    var comps: [String]
    /// Its path relative to the context root (for .dockerignore), when it comes from the context.
    var contextRel: String?
    /// ADD from a URL: never extracted, even when it is an archive.
    var downloaded = false
}

extension BuildSession {
    func copy(_ c: FileCopy, isAdd: Bool, node: Node, name: String, stage: Stage, state: inout StageState) throws {
        let kw = isAdd ? "ADD" : "COPY"
        if c.parents { throw BuildFailure("\(kw) --parents is not supported yet") }
        let excludes = c.excludes.isEmpty ? nil : DockerIgnore(try c.excludes.map { try expand($0, state) }.joined(separator: "\n"))
        let dest = try expand(c.destination, state)
        let workdir = state.config.WorkingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/"
        let destPath = cleanPath(dest.hasPrefix("/") ? dest : workdir + "/" + dest)
        let destIsDirForm = dest.hasSuffix("/") || dest.hasSuffix("/.") || dest == "."
        let chmod: mode_t? = try c.chmod.map { text in
            guard let m = UInt32(text, radix: 8), m <= 0o7777 else {
                throw BuildFailure("\(kw) --chmod=\(text): only octal modes (such as 0755) are supported")
            }
            return mode_t(m)
        }
        let chownText = try c.chown.map { try expand($0, state) }

        var key = CacheKey(parent: state.key)
        key.add("op", kw)
        var matches: [CopyMatch] = []
        var keepOwners = false
        var holders: [LayerStaging] = []   // temporary files (heredocs, downloads) live as long as the step
        let heredocs = c.heredocs
        let patterns = try c.sources.filter { !$0.hasPrefix("<<") }.map { try expand($0, state) }

        if !heredocs.isEmpty {
            let tmp = try LayerStaging(in: tmpRoot)
            holders.append(tmp)
            for h in heredocs {
                let content = h.expand ? try expand(h.content, state) : h.content
                guard writeFileAt(tmp.fd, h.name, Array(content.utf8), mode: 0o644) else {
                    throw BuildFailure("cannot write the here-document \(h.name)")
                }
                key.add("heredoc", h.name + "\u{0}" + content)
                matches.append(CopyMatch(view: SnapshotView(directory: tmp.dir), comps: [h.name]))
            }
        }
        if let fromText = c.from {
            let from = try expand(fromText, state)
            keepOwners = true
            let view: SnapshotView
            var hashed = false
            if let i = stageIndex(named: from, before: stage.index) {
                guard var source = result(i) else { throw BuildFailure("internal: stage \(from) has not been built") }
                view = SnapshotView(try materialise(&source))
                key.add("from-stage", source.key.description)
            } else if let named = options.buildContexts[from], !named.contains("://") {
                let ctx = URL(fileURLWithPath: named).standardizedFileURL.resolvingSymlinksInPath().path
                keepOwners = false
                hashed = true
                view = SnapshotView(directory: ctx)
                let hasher = ContextHasher(root: ctx, index: builder.cache)
                defer { hasher.save() }
                key.add("from-context", ctx)
                for p in patterns {
                    for m in try match(view, p, what: "build context \(from)") {
                        matches.append(m)
                        key.add("src", m.comps.joined(separator: "/") + "\u{0}" + (try hasher.digest(of: m.comps.joined(separator: "/"))).description)
                    }
                }
            } else {
                let (digest, manifest, image) = try resolveImage(from, platform: state.platform)
                view = SnapshotView(try snapshot(ofImage: manifest, config: image, name: from, store: store, snapshotter: snapshotter))
                key.add("from-image", digest.description)
            }
            if !hashed {
                for p in patterns {
                    let found = try match(view, p, what: "stage or image \(from)")
                    matches += found
                    key.add("src", p)
                }
            }
        } else {
            for p in patterns {
                if isAdd, p.hasPrefix("http://") || p.hasPrefix("https://") {
                    let tmp = try LayerStaging(in: tmpRoot)
                    holders.append(tmp)
                    let (file, digest) = try download(p, into: tmp, checksum: c.checksum)
                    matches.append(CopyMatch(view: SnapshotView(directory: tmp.dir), comps: [file], downloaded: true))
                    key.add("url", p + "\u{0}" + digest.description)
                    continue
                }
                if p.contains("://") || p.hasPrefix("git@") {
                    throw BuildFailure("\(kw) \(p): only http(s) URLs are supported as remote sources")
                }
                guard let hasher, let root = options.contextDirectory else {
                    throw BuildFailure("\(kw) \(p): this build has no context (the Dockerfile came from stdin); pass a context directory")
                }
                _ = root
                let view = SnapshotView(directory: hasher.root)
                let found = try match(view, p, what: "build context").filter { !ignore.matches($0.contextRel ?? "") || $0.comps.isEmpty }
                guard !found.isEmpty else {
                    throw BuildFailure("\(kw) failed: \"\(p)\" not found in the build context or excluded by .dockerignore")
                }
                for m in found {
                    let rel = m.contextRel ?? ""
                    let ig = ignore
                    let include: ((String) -> Bool)? = ig.patterns.isEmpty ? nil : { !ig.matches($0) }
                    key.add("src", rel + "\u{0}" + (try hasher.digest(of: rel, include: include)).description)
                }
                matches += found
            }
        }
        if c.checksum != nil && !matches.allSatisfy(\.downloaded) {
            throw BuildFailure("ADD --checksum can only be used with a URL source")
        }
        if matches.count > 1 && !destIsDirForm {
            throw BuildFailure("When using \(kw) with more than one source file, the destination must be a directory and end with a /")
        }
        key.add("dest", destPath + (destIsDirForm ? "/" : ""))
        key.add("chown", chownText ?? "")
        key.add("chmod", chmod.map { String($0, radix: 8) } ?? "")
        key.add("exclude", c.excludes)
        key.add("layer", layerKey)

        let ig = ignore
        var made: Snapshot?
        let result = try reporter.step(name) { step in
            try cached(key.digest, stage: stage, step: step) {
                let baseSnapshot = try materialise(&state)
                let base = SnapshotView(baseSnapshot)
                var owner: (uid: UInt32, gid: UInt32)?
                if let chownText { owner = try resolveChown(chownText, base: base) }
                let destComps = try base.resolve(destPath, followLast: true)
                let existing = destComps.isEmpty ? nil : try base.lookup(destComps)
                let existingDir = destComps.isEmpty || existing?.entry.type == S_IFDIR
                var anyDir = false
                for m in matches {
                    if m.comps.isEmpty { anyDir = true; continue }
                    if let (_, e) = try m.view.lookup(m.comps), e.type == S_IFDIR { anyDir = true }
                    else if isAdd && !m.downloaded, let (_, e) = try m.view.lookup(m.comps), isArchive(e) { anyDir = true }
                }
                let intoDir = destIsDirForm || existingDir || anyDir || matches.count > 1
                let staging = try LayerStaging(in: tmpRoot)
                let dirComps = intoDir ? destComps : Array(destComps.dropLast())
                let dfd = try staging.makeDirectories(dirComps, base: base, mapping: snapshotter.mapping, owner: owner ?? (0, 0))
                defer { close(dfd) }
                let prefix = dirComps.joined(separator: "/")
                func join(_ a: String, _ b: String) -> String { a.isEmpty ? b : a + "/" + b }
                // Every path written, with the owner its layer records: --chown's, else the
                // source's (a stage, an image, an archive), else root's (the context).
                var recorded: [String: (uid: UInt32, gid: UInt32)] = [:]
                for m in matches {
                    var copier = ViewCopier(view: m.view, mapping: snapshotter.mapping, destRoot: staging.fd)
                    copier.mode = chmod
                    let ctxRel = m.contextRel
                    copier.include = { rel in
                        if let ctxRel, ig.matches(join(ctxRel, rel)) { return false }
                        if let excludes, excludes.matches(rel) { return false }
                        return true
                    }
                    if let (parent, e) = try m.view.lookup(m.comps), e.type != S_IFDIR {
                        if isAdd && !m.downloaded && isArchive(e) {
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
                        throw BuildFailure("\(kw) failed: \"/\(m.comps.joined(separator: "/"))\" not found")
                    }
                    for p in copier.copied { recorded[p] = owner ?? (keepOwners ? copier.owners[p] : nil) ?? (0, 0) }
                }
                for (p, o) in recorded { staging.owners[p] = o }
                let result = try staging.layer(store: store.content, options: layerOptions)
                made = try staging.adopt(result, snapshotter: snapshotter, store: store.content, on: baseSnapshot)
                return result
            }.0
        }
        withExtendedLifetime(holders) {}
        let shown = c.sources.joined(separator: " ")
        append(result, &state, createdBy: "\(kw) \(shown) \(dest) # buildkit", snapshot: made)
        state.key = key.digest
    }

    /// The entries a source pattern names in a view: a path (symlinks followed inside the view)
    /// or a glob (`*`, `?`, `[…]` within one path component, as Go's filepath.Match).
    func match(_ view: SnapshotView, _ pattern: String, what: String) throws -> [CopyMatch] {
        let isContext = view.layers.count == 1 && view.layers[0] == hasher?.root
        let clean = cleanPath("/" + pattern)
        let comps = clean.split(separator: "/").map(String.init)
        let hasGlob = comps.contains { $0.contains(where: { "*?[".contains($0) }) }
        if !hasGlob {
            let resolved = try view.resolve(clean, followLast: true)
            let exists = try resolved.isEmpty || view.lookup(resolved) != nil
            guard exists else {
                throw BuildFailure("\"\(pattern)\" not found in the \(what)")
            }
            return [CopyMatch(view: view, comps: resolved, contextRel: isContext ? resolved.joined(separator: "/") : nil)]
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
        guard !found.isEmpty else { throw BuildFailure("no source files were specified: \"\(pattern)\" matches nothing in the \(what)") }
        return found.map { CopyMatch(view: view, comps: $0, contextRel: isContext ? $0.joined(separator: "/") : nil) }
    }

    /// `--chown=USER[:GROUP]`: names from the base's /etc/passwd and /etc/group; a user alone
    /// gives the group of the same number, as Docker documents.
    func resolveChown(_ text: String, base: SnapshotView) throws -> (uid: UInt32, gid: UInt32) {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        func id(_ name: String, file: String, field: Int) throws -> UInt32 {
            if let n = UInt32(name) { return n }
            let text = String(decoding: try base.readFile(file) ?? [], as: UTF8.self)
            for line in text.split(separator: "\n") {
                let f = line.split(separator: ":", omittingEmptySubsequences: false)
                if f.count > field, f[0] == name, let n = UInt32(f[field]) { return n }
            }
            throw BuildFailure("--chown=\(text): no \(file == "/etc/passwd" ? "user" : "group") named \(name) in the image's \(file)")
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
    func download(_ url: String, into tmp: LayerStaging, checksum: String?) throws -> (String, Digest) {
        guard let u = URL(string: url) else { throw BuildFailure("ADD \(url): not a valid URL") }
        var name = u.lastPathComponent
        if name.isEmpty || name == "/" { name = "__unnamed__" }
        let fd = openat(tmp.fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BuildFailure("ADD \(url): cannot create \(name): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let hash = SHA256()
        let r: HTTP.Response
        do {
            r = try HTTP.perform("GET", url) { _, bytes in
                hash.update(bytes)
                guard write(fd, bytes.baseAddress, bytes.count) == bytes.count else {
                    throw BuildFailure("ADD \(url): writing \(name) failed: \(String(cString: strerror(errno)))")
                }
            }
        } catch let e as HTTP.TransportError {
            throw BuildFailure("ADD \(url): download failed: \(e)")
        }
        guard (200..<300).contains(r.status) else { throw BuildFailure("ADD \(url): the server answered \(r.status)") }
        let digest = hash.finish()
        if let checksum {
            let want = try Digest(parsing: checksum)
            guard want == digest else {
                throw BuildFailure("ADD \(url): checksum mismatch: expected \(want), got \(digest)")
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

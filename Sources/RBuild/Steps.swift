import Foundation

/// A layer being made by hand (COPY, ADD, WORKDIR): a private directory whose tree is the layer,
/// with the owners each entry must be recorded with.
final class LayerStaging {
    let dir: String
    let fd: Int32
    var owners: [String: (uid: UInt32, gid: UInt32)] = [:]

    init(in parent: String) throws {
        guard let d = makeTemporaryDirectory(prefix: parent + "/layer-") else {
            throw BuildFailure("cannot create a directory in \(parent): \(String(cString: strerror(errno)))")
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
            guard next >= 0 else { throw BuildFailure("cannot create /\(rel): \(String(cString: strerror(errno)))") }
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
        return try snapshotter.adopt(dir, layer: store.blob(layer), diffID: diffID, name: layer.digest.description,
                                     owners: records, on: base)
    }

    func layer(store: ContentStore, options: LayerOptions) throws -> CachedResult {
        var opts = options
        opts.owners = owners
        let uid = getuid(), gid = getgid()
        opts.ownership = { u, g in (u == uid ? 0 : u, g == gid ? 0 : g) }
        let result = try writeLayer(fromDirectory: dir, store: store, options: opts)
        return result.entries == 0 ? CachedResult(layer: nil, diffID: nil) : CachedResult(layer: result.descriptor, diffID: result.diffID)
    }
}

/// `/a/./b/../c` → `/a/c`.
func cleanPath(_ path: String) -> String {
    var out: [Substring] = []
    for c in path.split(separator: "/") {
        if c == "." { continue }
        if c == ".." { if !out.isEmpty { out.removeLast() }; continue }
        out.append(c)
    }
    return "/" + out.joined(separator: "/")
}

extension BuildSession {
    var tmpRoot: String { store.layout.tmp }

    // MARK: - RUN

    func run(_ r: Run, node: Node, name: String, stage: Stage, state: inout StageState) throws {
        guard r.mounts.isEmpty else {
            throw BuildFailure("RUN --mount is not supported yet (\(r.mounts.joined(separator: " ")))")
        }
        if r.security == "insecure" {
            throw BuildFailure("RUN --security=insecure is refused: rbuild runs every step without extra privileges")
        }
        var argv: [String]
        var stdin: [UInt8]?
        var createdBy: String
        switch r.command {
        case .exec(let a):
            guard !a.isEmpty else { throw BuildFailure("RUN [] has no command") }
            argv = a
            createdBy = "RUN " + a.description
        case .shell(let text):
            createdBy = "RUN " + (state.shell + [text]).joined(separator: " ")
            if r.heredocs.isEmpty {
                argv = state.shell + [text]
            } else if r.heredocs.count == 1, isLoneHeredoc(text) {
                let script = r.heredocs[0].content
                if script.hasPrefix("#!") {
                    // A script with its own interpreter reads itself from stdin.
                    let first = script.split(separator: "\n", maxSplits: 1).first ?? ""
                    argv = first.dropFirst(2).split(separator: " ").map(String.init) + ["/dev/stdin"]
                    stdin = Array(script.utf8)
                } else {
                    argv = state.shell + [script]
                }
            } else {
                // The shell reads the here-documents itself, as it would from a script.
                var script = text + "\n"
                for h in r.heredocs {
                    script += h.content
                    if !h.content.isEmpty && !h.content.hasSuffix("\n") { script += "\n" }
                    script += h.name + "\n"
                }
                argv = state.shell + [script]
            }
        }
        var env = state.scope.runEnvironment
        if !env.contains(where: { $0.hasPrefix("PATH=") }) { env.insert("PATH=" + Sandbox.defaultPath, at: 0) }
        let user = state.config.User.flatMap { $0.isEmpty ? nil : $0 } ?? "0"
        let workdir = state.config.WorkingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/"
        let network: NetworkMode = r.network == "none" ? .none : .host
        var key = CacheKey(parent: state.key)
        key.add("run", argv)
        key.add("env", env)
        key.add("user", user)
        key.add("workdir", workdir)
        key.add("network", network.rawValue)
        key.add("platform", state.platform.description)
        key.add("stdin", stdin.map { String(decoding: $0, as: UTF8.self) } ?? "")
        key.add("layer", layerKey)
        var made: Snapshot?
        let result = try reporter.step(name) { step in
            try cached(key.digest, stage: stage, step: step) {
                let base = try materialise(&state)
                let active = try snapshotter.prepare(base)
                var kept = false
                defer { if !kept { try? snapshotter.remove(active) } }
                var spec = SandboxSpec(root: snapshotter.mounts(active), argv: argv)
                spec.env = env
                spec.user = try UserSpec.parse(user)
                spec.workdir = workdir
                spec.network = network
                spec.hostname = "buildkitsandbox"
                if let arch = Architecture(platform: state.platform.description) { spec.architecture = arch }
                let (status, tail) = try runCapturing(spec, stdin: stdin, step: step)
                guard status == 0 else {
                    throw BuildError(file: options.dockerfileName, line: node.range.startLine, instruction: node.original,
                                     message: "process \"\(argv.joined(separator: " "))\" did not complete successfully: exit code: \(status)",
                                     outputTail: tail)
                }
                let layer = try snapshotter.diff(active, store: store.content, options: layerOptions)
                if layer.entries == 0 { return CachedResult(layer: nil, diffID: nil) }
                made = try snapshotter.commit(active, diffID: layer.diffID)
                kept = true
                return CachedResult(layer: layer.descriptor, diffID: layer.diffID)
            }.0
        }
        append(result, &state, createdBy: createdBy + " # buildkit", snapshot: made)
        state.key = key.digest
    }

    /// `<<EOF`, `<<-EOF`, `<<"EOF"`: a command that is only a here-document.
    func isLoneHeredoc(_ text: String) -> Bool {
        let t = text.trimmingCharacters(in: .whitespaces)
        guard t.hasPrefix("<<") else { return false }
        return !t.dropFirst(2).contains(where: { $0 == " " || $0 == "\t" || $0 == "<" })
    }

    /// Runs the sandbox with its output read line by line into the step; returns the exit
    /// status and the last lines.
    func runCapturing(_ spec: SandboxSpec, stdin: [UInt8]?, step: ProgressReporter.Step) throws -> (Int32, [String]) {
        var spec = spec
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw BuildFailure("pipe: \(String(cString: strerror(errno)))") }
        let (r, w) = (fds[0], fds[1])
        _ = fcntl(r, F_SETFD, FD_CLOEXEC)
        var input: Int32
        if let stdin {
            let path = tmpRoot + "/stdin-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            guard let fd = Optional(open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)), fd >= 0 else {
                throw BuildFailure("cannot create \(path): \(String(cString: strerror(errno)))")
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

    // MARK: - WORKDIR

    func workdir(_ path: String, name: String, stage: Stage, state: inout StageState) throws {
        let current = state.config.WorkingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/"
        let dir = cleanPath(path.hasPrefix("/") ? path : current + "/" + path)
        state.config.WorkingDir = dir
        let user = state.config.User.flatMap { $0.isEmpty ? nil : $0 }
        var key = CacheKey(parent: state.key)
        key.add("workdir", dir)
        key.add("user", user ?? "")
        key.add("layer", layerKey)
        // Like BuildKit: the directory is made (owned by USER) when it does not exist.
        var made: Snapshot?
        let result = try reporter.step(name) { step in
            try cached(key.digest, stage: stage, step: step) {
                let base = try materialise(&state)
                let view = SnapshotView(base)
                let comps = try view.resolve(dir, followLast: true)
                if comps.isEmpty { return CachedResult(layer: nil, diffID: nil) }
                if let (_, e) = try view.lookup(comps), e.type == S_IFDIR { return CachedResult(layer: nil, diffID: nil) }
                var owner: (UInt32, UInt32) = (0, 0)
                if let user {
                    let u = try UserDatabase.resolve(try UserSpec.parse(user), roots: view.layers)
                    owner = (u.uid, u.gid)
                }
                let staging = try LayerStaging(in: tmpRoot)
                close(try staging.makeDirectories(comps, base: view, mapping: snapshotter.mapping, owner: owner))
                let result = try staging.layer(store: store.content, options: layerOptions)
                made = try staging.adopt(result, snapshotter: snapshotter, store: store.content, on: base)
                return result
            }.0
        }
        append(result, &state, createdBy: "WORKDIR " + dir, snapshot: made)
        state.key = key.digest
    }
}

import Foundation
import RBuildOCI
import RBuildRuntime
import RBuildSnapshots
import RBuildSystem

/// The secrets and ssh agents a build was given (`--secret`, `--ssh`). A secret's value is read
/// when a step mounts it and handed to the sandbox in memory: it is never written to the state
/// dir, a layer, a cache key, the progress output or the history.
public struct BuildSecrets: Sendable {
    public enum Source: Sendable, Equatable {
        case file(String)
        case environment(String)
        /// The value itself, held in memory only (a node's secrets arrive so over ssh).
        case bytes([UInt8])
    }
    public var secrets: [String: Source] = [:]
    /// Agent sockets by id (`--ssh default` is $SSH_AUTH_SOCK).
    public var agents: [String: String] = [:]

    public init(secrets: [String: Source] = [:], agents: [String: String] = [:]) {
        self.secrets = secrets
        self.agents = agents
    }

    /// BuildKit's limit: a secret is a key or a token, not a file tree.
    public static let maximumSize = 500 * 1024

    /// The value of secret `id`, or nil when the build was not given it.
    public func value(_ id: String) throws -> [UInt8]? {
        switch secrets[id] {
        case nil:
            return nil
        case .bytes(let value)?:
            return value
        case .environment(let name)?:
            guard let v = ProcessInfo.processInfo.environment[name] else {
                throw SolveError("secret \(id): the environment variable \(name) is not set")
            }
            return Array(v.utf8)
        case .file(let path)?:
            let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            guard fd >= 0 else { throw SolveError("secret \(id): cannot open \(path): \(String(cString: strerror(errno)))") }
            let file = FileDescriptor(owning: fd)
            var st = stat()
            guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
                throw SolveError("secret \(id): \(path) is not a regular file")
            }
            let bytes = try file.readAll(limit: Self.maximumSize + 1)
            guard bytes.count <= Self.maximumSize else {
                throw SolveError("secret \(id): \(path) is larger than \(Self.maximumSize / 1024) KiB")
            }
            return bytes
        }
    }
}

/// What one exec op's mounts hold while it runs: cache leases, staging copies of context files,
/// throw-away snapshots, agent forwarders. `release` gives it all back.
final class StepMounts {
    var mounts: [SandboxMount] = []
    /// Variables the mounts add (a secret's env=, SSH_AUTH_SOCK): never part of a key.
    var env: [String] = []
    var leases: [CacheMounts.Lease] = []
    var staging: [LayerStaging] = []
    var scratch: [String] = []
    var actives: [ActiveSnapshot] = []
    var forwarders: [SocketForwarder] = []

    func release(_ snapshotter: any Snapshotter) {
        forwarders.forEach { $0.stop() }
        leases.forEach { $0.release() }
        for a in actives { try? snapshotter.remove(a) }
        for d in scratch { try? removeDirectory(d, tasks: snapshotter.tasks) }
        staging.removeAll()
    }
}

extension Solver {
    /// Makes what `e`'s mounts need; the caller releases it once the sandbox has exited.
    func prepareMounts(_ e: ExecOp, vertex: Vertex, root: Snapshot, sources: [Int: Snapshot], user: UserSpec) throws -> StepMounts {
        let held = StepMounts()
        do {
            for m in e.mounts {
                try prepare(m, exec: e, vertex: vertex, root: root, sources: sources, user: user, into: held)
            }
        } catch {
            held.release(snapshotter)
            throw error
        }
        return held
    }

    private func prepare(_ m: ExecMount, exec e: ExecOp, vertex: Vertex, root: Snapshot, sources: [Int: Snapshot],
                         user: UserSpec, into held: StepMounts) throws {
        switch m.kind {
        case .bind(let input, let source, let rw):
            try bind(vertex.inputs[input], snapshot: sources[input], source: source, target: m.target, readWrite: rw, into: held)
        case .cache(let c):
            var owner = (uid: c.uid ?? 0, gid: c.gid ?? 0)
            if c.uid == nil || c.gid == nil {
                let u = try UserDatabase.resolve(user, in: SnapshotView(root))
                owner = (c.uid ?? u.uid, c.gid ?? u.gid)
            }
            var seed: ((String) throws -> [Ownership.Record])?
            if let from = c.from {
                let input = vertex.inputs[from]
                seed = { [self] dir in try copyInto(dir, from: input, snapshot: sources[from], source: c.source) }
            } else {
                // A cache this state dir lacks starts as an imported export of it, if any.
                seed = imports?.cacheMountSeed(id: c.id)
            }
            let lease = try cacheMounts.acquire(id: c.id, sharing: c.sharing, owner: owner, mode: c.mode, seed: seed)
            held.leases.append(lease)
            held.mounts.append(.bind(source: lease.path, target: m.target, readOnly: c.readOnly))
        case .tmpfs(let size):
            held.mounts.append(.tmpfs(target: m.target, size: size))
        case .secret(let s):
            guard let value = try secrets.value(s.id) else {
                if s.required {
                    throw SolveError("secret \(s.id) is required but was not given: pass --secret id=\(s.id),src=FILE (or env=VARIABLE)")
                }
                return
            }
            if !m.target.isEmpty {
                held.mounts.append(.file(target: m.target, content: value, uid: s.owner.uid, gid: s.owner.gid, mode: s.owner.mode))
            }
            if let name = s.env { held.env.append(name + "=" + String(decoding: value, as: UTF8.self)) }
        case .ssh(let s):
            guard let agent = secrets.agents[s.id] else {
                if s.required {
                    throw SolveError("ssh agent \(s.id) is required but was not given: pass --ssh \(s.id == "default" ? "default" : s.id + "=SOCKET|KEYFILE")")
                }
                return
            }
            let dir = try makeTemporaryDirectory(in: tmpRoot, prefix: "ssh-")
            held.scratch.append(dir)
            let forwarder = try SocketForwarder(listeningAt: dir + "/agent.sock", to: agent)
            held.forwarders.append(forwarder)
            chmod(forwarder.path, s.owner.mode & 0o7777)
            if s.owner.uid != 0 || s.owner.gid != 0 {
                try snapshotter.tasks.setOwners([Ownership.Record(path: "agent.sock", uid: s.owner.uid, gid: s.owner.gid,
                                                                  mode: UInt32(s.owner.mode & 0o7777))], under: dir)
            }
            held.mounts.append(.bind(source: forwarder.path, target: m.target, readOnly: false))
            if !held.env.contains(where: { $0.hasPrefix("SSH_AUTH_SOCK=") }) { held.env.append("SSH_AUTH_SOCK=" + m.target) }
        }
    }

    /// A bind mount's files. From a local directory: a copy of what `source` names with
    /// .dockerignore applied (the directory itself is never exposed). From a stage or an image:
    /// its snapshot, read-only or with a throw-away upper.
    private func bind(_ input: Vertex, snapshot: Snapshot?, source: String, target: String, readWrite: Bool,
                      into held: StepMounts) throws {
        // The chroot isolation cannot mount a snapshot: it gets a copy of the files, as from a
        // local directory (a read-write mount's changes are thrown away either way).
        if case .source(.local) = input.op {
            try stageCopy()
            return
        }
        if isolation == .chroot {
            try stageCopy()
            return
        }
        func stageCopy() throws {
            let staging = try LayerStaging(in: tmpRoot)
            held.staging.append(staging)
            let dest = staging.dir + "/m"
            let owners = try copyInto(dest, from: input, snapshot: snapshot, source: source, create: true)
            // A stage's files keep their owners (the context's belong to root inside, as COPY makes them).
            if case .source(.local) = input.op {} else if !owners.isEmpty {
                var st = stat()
                if lstat(dest, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
                    try snapshotter.tasks.setOwners(owners, under: dest)
                } else {
                    try snapshotter.tasks.setOwners(owners.map { Ownership.Record(path: "m", uid: $0.uid, gid: $0.gid, mode: $0.mode) },
                                                    under: staging.dir)
                }
            }
            held.mounts.append(.bind(source: staging.dir + "/m", target: target, readOnly: !readWrite))
        }
        guard let snapshot else { throw SolveError("RUN --mount: \(input.name.isEmpty ? "this source" : input.name) cannot be mounted") }
        let view = SnapshotView(snapshot)
        let comps = try view.resolve(source, followLast: true)
        var isDirectory = true
        if !comps.isEmpty {
            guard let (_, e) = try view.lookup(comps) else {
                throw SolveError("RUN --mount: source \"\(source)\" not found in \(input.name.isEmpty ? "the mounted stage" : input.name)")
            }
            isDirectory = e.type == S_IFDIR
        }
        let scratch = try makeTemporaryDirectory(in: tmpRoot, prefix: "mount-")
        held.scratch.append(scratch)
        let mounts: RootMounts
        if readWrite {
            let (r, active) = try snapshotter.throwawayMounts(snapshot, scratch: scratch)
            if let active { held.actives.append(active) }
            mounts = r
        } else {
            mounts = try snapshotter.readOnlyMounts(snapshot, scratch: scratch)
        }
        held.mounts.append(.root(mounts, subpath: comps.joined(separator: "/"), target: target, readOnly: !readWrite,
                                 isDirectory: isDirectory))
    }

    /// Copies what `source` names in `input` (a local directory, .dockerignore applied, or a
    /// snapshot) to `dest` — the directory's entries into it, or the file as it. Returns the
    /// owners to give the copied entries (ids inside the sandbox), relative to `dest`.
    @discardableResult
    func copyInto(_ dest: String, from input: Vertex, snapshot: Snapshot?, source: String,
                  create: Bool = false) throws -> [Ownership.Record] {
        var match: CopyMatch
        var ignore: DockerIgnore?
        if case .source(.local(_, let path, let excludes)) = input.op {
            let found = try localMatches(path: path, excludes: excludes, pattern: source, keyword: "RUN --mount", what: "build context")
            match = found.matches[0]
            ignore = found.ignore
        } else if let snapshot {
            let view = SnapshotView(snapshot)
            match = CopyMatch(view: view, comps: try view.resolve(source, followLast: true))
            if !match.comps.isEmpty, try view.lookup(match.comps) == nil {
                throw SolveError("RUN --mount: \"\(source)\" not found in \(input.name.isEmpty ? "the mounted stage" : input.name)")
            }
        } else {
            throw SolveError("RUN --mount: \(input.name.isEmpty ? "this source" : input.name) cannot be mounted")
        }
        let parent = (dest as NSString).deletingLastPathComponent, name = (dest as NSString).lastPathComponent
        let pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard pfd >= 0 else { throw SolveError("cannot open \(parent): \(String(cString: strerror(errno)))") }
        defer { close(pfd) }
        var copier = ViewCopier(view: match.view, mapping: snapshotter.mapping, destRoot: pfd)
        let localRel = match.localRel
        if let ignore, !ignore.patterns.isEmpty {
            copier.include = { rel in
                let full = localRel.map { $0.isEmpty ? rel : $0 + "/" + rel } ?? rel
                return !ignore.matches(full)
            }
        }
        if let (dirOfEntry, e) = try match.view.lookup(match.comps), e.type != S_IFDIR {
            try copier.copy(e, in: dirOfEntry, srcRel: "", to: pfd, name: name, destRel: name)
        } else if let dir = try match.view.directory(match.comps) {
            if create || access(dest, F_OK) != 0 {
                guard mkdirat(pfd, name, 0o755) == 0 || errno == EEXIST else { throw SystemError("mkdir", path: dest) }
            }
            let dfd = open(dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard dfd >= 0 else { throw SolveError("cannot open \(dest): \(String(cString: strerror(errno)))") }
            defer { close(dfd) }
            for e in try match.view.entries(dir) {
                if let include = copier.include, !include(e.name) { continue }
                try copier.copy(e, in: dir, srcRel: e.name, to: dfd, name: e.name, destRel: name + "/" + e.name)
            }
        }
        return copier.owners.compactMap { rel, o in
            let inside = rel.hasPrefix(name + "/") ? String(rel.dropFirst(name.count + 1)) : rel
            var st = stat()
            guard lstat(parent + "/" + rel, &st) == 0, (st.st_mode & S_IFMT) != S_IFLNK else { return nil }
            return Ownership.Record(path: inside, uid: o.uid, gid: o.gid, mode: UInt32(st.st_mode & 0o7777))
        }
    }

    // MARK: - Mount points

    /// Removes fuse-overlayfs's opaque markers (`.wh..wh..opq`, `.wh..opq`) from `dir` when they
    /// are all the directory holds.
    private func removeOpaqueMarker(_ dir: String) -> Bool {
        let markers: Set = [".wh..wh..opq", ".wh..opq"]
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir), !names.isEmpty,
              names.allSatisfy(markers.contains) else { return false }
        return names.allSatisfy { unlink(dir + "/" + $0) == 0 }
    }

    /// The mount points a sandbox will make that `base` lacks: each as its canonical path in the
    /// root (symlinks of the image followed, as the sandbox follows them) and the index of its
    /// first missing component.
    func missingMountPoints(_ targets: [String], in base: SnapshotView) throws -> [(comps: [String], first: Int)] {
        var out: [(comps: [String], first: Int)] = []
        for t in targets {
            let comps = try base.resolve(t, followLast: true)
            guard !comps.isEmpty, try base.lookup(comps) == nil else { continue }
            var first = comps.count - 1
            while first > 0, try base.lookup(Array(comps[..<first])) == nil { first -= 1 }
            out.append((comps, first))
        }
        return out
    }

    /// Removes, from `active`'s changes, the mount points the sandbox made (still empty: a file
    /// or a directory the command filled is its own) and the parents made for them; then the
    /// directories above them that only changed because of that (a copy-up in an overlay's
    /// upper, a copy's changed mtime), so that a step that mounted a secret at /run/secrets/x
    /// and changed nothing else writes no layer. BuildKit's executor cleans its mount stubs too.
    func removeMountPoints(_ missing: [(comps: [String], first: Int)], active: ActiveSnapshot, base: SnapshotView) throws {
        guard !missing.isEmpty else { return }
        let changes = snapshotter.changes(active)
        var parents = Set<[String]>()
        for (comps, first) in missing.sorted(by: { $0.comps.count > $1.comps.count }) {
            for k in stride(from: comps.count, to: first, by: -1) {
                let path = changes + "/" + comps[..<k].joined(separator: "/")
                var st = stat()
                guard lstat(path, &st) == 0 else { continue }
                let type = st.st_mode & S_IFMT
                if type == S_IFREG && st.st_size == 0 {
                    unlink(path)
                } else if type == S_IFDIR {
                    // fuse-overlayfs marks a directory it creates opaque with a marker file.
                    if rmdir(path) != 0 && !(errno == ENOTEMPTY && removeOpaqueMarker(path) && rmdir(path) == 0) { break }
                } else {
                    break
                }
            }
            parents.insert(Array(comps[..<first]))
        }
        for parent in parents.sorted(by: { $0.count > $1.count }) {
            var comps = parent
            while !comps.isEmpty {
                guard let (_, e) = try base.lookup(comps), e.type == S_IFDIR else { break }
                let path = changes + "/" + comps.joined(separator: "/")
                var st = stat()
                guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR,
                      st.st_mode == e.stat.st_mode, st.st_uid == e.stat.st_uid, st.st_gid == e.stat.st_gid else { break }
                if snapshotter.kind == .copy {
                    // A full tree: only the directory the mount point was made in changed.
                    var times = [e.stat.st_atim, e.stat.st_mtim]
                    utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
                    break
                } else {
                    // An overlay's copied-up directory: gone if nothing else is in it (an opaque
                    // one carries an xattr or, for fuse-overlayfs, a marker file, and stays).
                    guard !hasXattr(path: path, name: "user.overlay.opaque"), rmdir(path) == 0 else { break }
                }
                comps.removeLast()
            }
        }
    }
}

import Foundation
import RBuildOCI
import RBuildRuntime
import RBuildSystem

// The op graph a frontend lowers to and the solver runs (BuildKit's LLB is the model for the
// idea). A vertex is an op and the vertices it reads; the graph is immutable once built.
//
// Two digests, both sha256 over length-prefixed named fields (`CacheKey`):
// - `Vertex.digest`, the definition: the op's canonical encoding and its inputs' digests. Equal
//   digests are the same work, so the solver runs such vertices once however many stages,
//   platforms or targets of one process reach them.
// - the cache key (`Solver.cacheKey`), what the cache index is looked up by: the op's
//   canonical encoding, SOURCE_DATE_EPOCH for ops that write a layer, and each input's cache
//   key — for sources, the digest of their content (an image's manifest digest; for the files
//   of a local context that a COPY reads, their paths and the digests of their bytes and
//   modes; the bytes of an inline file; the digest of a download; the commit a git ref
//   resolves to).
//   Never in a key: mtimes, the state dir or context paths, the user who builds, the
//   snapshotter, the id-mapping mode, step names, or image-config-only instructions (LABEL,
//   CMD, EXPOSE, … are not ops at all). So a Dockerfile gives the same keys in two state dirs
//   and for two users, and a LABEL edit costs nothing.

/// Where a source's files come from.
public enum SourceOp: Sendable {
    /// An empty root.
    case scratch
    /// A resolved image: the manifest digest (its content address) is what counts; `reference`
    /// is for messages only.
    case image(reference: String, manifest: Digest, platform: Platform)
    /// A directory on this machine (the build context, or a named context). `excludes` are
    /// .dockerignore patterns: excluded files are never read. The path is not part of any key.
    case local(name: String, path: String, excludes: [String])
    /// Files given in the definition itself (COPY <<EOF): name → bytes, mode 0644.
    case inline(files: [InlineFile])
    /// A file fetched over http(s) (ADD URL), checked against `checksum` when given.
    case http(url: String, checksum: Digest?)
    /// A commit of a git repository (ADD of a git URL, a git context): its files, read where
    /// they are checked out. Its content is the commit the ref resolves to.
    case git(GitSource)
}

public struct InlineFile: Sendable, Hashable {
    public var name: String
    public var content: [UInt8]
    public init(name: String, content: [UInt8]) {
        self.name = name
        self.content = content
    }
}

/// A process run on its input's root (input 0); what it changes becomes a layer.
public struct ExecOp: Sendable {
    public var args: [String]
    public var env: [String]
    public var cwd: String
    /// As written (`app`, `1000:1000`): names resolve in the root when it runs.
    public var user: String
    public var network: NetworkMode
    /// `--add-host` entries for its /etc/hosts, in order (part of the key, as in BuildKit: what
    /// a step resolves can change what it writes).
    public var extraHosts: [ExtraHost]
    public var platform: Platform
    /// Bytes on standard input (a here-document script with its own interpreter); else /dev/null.
    public var stdin: [UInt8]?
    /// What the process sees mounted besides its root (RUN --mount), in order.
    public var mounts: [ExecMount]
    /// `--shm-size` (nil: 64 MiB) and `--ulimit`: in the key only when set, as BuildKit keeps
    /// them in its exec op (a step can read them, so they can change what it writes).
    public var shmSize: Int64?
    public var ulimits: [Ulimit] = []

    public init(args: [String], env: [String], cwd: String, user: String, network: NetworkMode,
                extraHosts: [ExtraHost] = [], platform: Platform, stdin: [UInt8]? = nil, mounts: [ExecMount] = []) {
        self.args = args
        self.env = env
        self.cwd = cwd
        self.user = user
        self.network = network
        self.extraHosts = extraHosts
        self.platform = platform
        self.stdin = stdin
        self.mounts = mounts
    }
}

/// A filesystem an exec op mounts besides its root (RUN --mount). What it holds is never part
/// of the op's layer; what each kind puts in the cache key is said at the kind.
public struct ExecMount: Sendable {
    public enum Kind: Sendable {
        /// The files of input `input` (a stage, an image or a local directory) at `source`
        /// inside it (symlinks resolved inside it); writes, with `readWrite`, are thrown away.
        /// Key: the input's key — for a local directory, the content of what `source` names.
        case bind(input: Int, source: String, readWrite: Bool)
        /// A directory kept in the state dir across builds. Key: its settings, never its files.
        case cache(CacheMount)
        /// An empty tmpfs of at most `size` bytes.
        case tmpfs(size: Int64?)
        /// A value the build is given (`--secret`), as a file at the target and/or a variable.
        /// Key: its id and settings, never its value.
        case secret(SecretMount)
        /// An ssh agent's socket (`--ssh`), with SSH_AUTH_SOCK set to it.
        case ssh(SSHMount)
    }
    public var kind: Kind
    /// Absolute and clean; empty for a secret given only as a variable.
    public var target: String

    public init(_ kind: Kind, target: String) {
        self.kind = kind
        self.target = target
    }
}

public enum CacheSharing: String, Sendable, CaseIterable {
    /// Every step using the id sees the same directory at once.
    case shared
    /// A step waits until no other one (in any rbuild process) uses the directory.
    case locked
    /// A step gets a directory of its own when another one is using the first.
    case `private`
}

public struct CacheMount: Sendable {
    public var id: String
    public var sharing: CacheSharing = .shared
    public var readOnly = false
    /// The input (and the path in it) a new cache directory starts as a copy of.
    public var from: Int?
    public var source = "/"
    /// The mode of a new cache directory; its owner is `uid`:`gid`, else the step's user.
    public var mode: mode_t = 0o755
    public var uid: UInt32?
    public var gid: UInt32?

    public init(id: String) { self.id = id }
}

/// Owner and mode of a mounted secret file or agent socket.
public struct MountOwner: Sendable, Equatable {
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    public var mode: mode_t
    public init(mode: mode_t) { self.mode = mode }
}

public struct SecretMount: Sendable {
    public var id: String
    /// Also (or only, with an empty target) exposed as this environment variable.
    public var env: String?
    /// A missing secret fails the step; else the mount is left out.
    public var required = false
    public var owner = MountOwner(mode: 0o400)
    public init(id: String) { self.id = id }
}

public struct SSHMount: Sendable {
    public var id = "default"
    public var required = false
    public var owner = MountOwner(mode: 0o600)
    public init() {}
}

extension ExecMount {
    /// The mount's fields as they go into a definition or a key, and a golden graph.
    var fields: [(String, String)] {
        func owner(_ o: MountOwner) -> [(String, String)] {
            [("uid", "\(o.uid)"), ("gid", "\(o.gid)"), ("mode", String(o.mode, radix: 8))]
        }
        switch kind {
        case .bind(let input, let source, let rw):
            return [("type", "bind"), ("target", target), ("input", "\(input)"), ("source", source), ("rw", rw ? "1" : "0")]
        case .cache(let c):
            return [("type", "cache"), ("target", target), ("id", c.id), ("sharing", c.sharing.rawValue),
                    ("ro", c.readOnly ? "1" : "0"), ("from", c.from.map { "\($0)" } ?? ""), ("source", c.source),
                    ("mode", String(c.mode, radix: 8)), ("uid", c.uid.map { "\($0)" } ?? ""), ("gid", c.gid.map { "\($0)" } ?? "")]
        case .tmpfs(let size):
            return [("type", "tmpfs"), ("target", target), ("size", size.map { "\($0)" } ?? "")]
        case .secret(let m):
            return [("type", "secret"), ("target", target), ("id", m.id), ("env", m.env ?? ""),
                    ("required", m.required ? "1" : "0")] + owner(m.owner)
        case .ssh(let m):
            return [("type", "ssh"), ("target", target), ("id", m.id), ("required", m.required ? "1" : "0")] + owner(m.owner)
        }
    }

    /// The input this mount reads, and the path in it.
    var input: (index: Int, source: String)? {
        switch kind {
        case .bind(let input, let source, _): return (input, source)
        case .cache(let c): return c.from.map { ($0, c.source) }
        default: return nil
        }
    }
}

/// A change to input 0's files, written as a layer.
public enum FileOp: Sendable {
    /// Copies from inputs 1… (sources, or other vertices' roots) into input 0. A local directory's,
    /// an inline file's or a download's files become root's; a root's keep their owners.
    case copy(CopyAction)
    /// Makes `path` and its missing parents, new ones owned by `owner` (a user spec resolved
    /// in the root) — WORKDIR.
    case mkdir(path: String, owner: String?)
}

/// What a copy reads from one of its inputs.
public struct CopySource: Sendable {
    /// The input (1 or more; 0 is the destination root).
    public var input: Int
    /// Paths or globs inside it, as written after expansion (for an inline or http source: the
    /// file names).
    public var paths: [String]
    /// How messages name it (`the build context`, `stage build`); not part of any digest.
    public var what: String
    public init(input: Int, paths: [String], what: String) {
        self.input = input
        self.paths = paths
        self.what = what
    }
}

public struct CopyAction: Sendable {
    public var sources: [CopySource]
    /// The destination, absolute and clean.
    public var destination: String
    /// The destination was written as a directory (`dir/`, `.`).
    public var destinationIsDirectory: Bool
    /// `--chown` as written (names resolve in the destination root).
    public var chown: String?
    public var chmod: mode_t?
    /// `--exclude` patterns.
    public var excludes: [String]
    /// ADD: archives (not downloads) are unpacked.
    public var unpackArchives: Bool
    /// Downloaded archives are unpacked too (an http(s) tarball as a build context).
    public var unpackDownloads = false
    /// The keyword, for messages (COPY or ADD).
    public var keyword: String

    public init(sources: [CopySource], destination: String, destinationIsDirectory: Bool, chown: String? = nil,
                chmod: mode_t? = nil, excludes: [String] = [], unpackArchives: Bool = false, keyword: String = "COPY") {
        self.sources = sources
        self.destination = destination
        self.destinationIsDirectory = destinationIsDirectory
        self.chown = chown
        self.chmod = chmod
        self.excludes = excludes
        self.unpackArchives = unpackArchives
        self.keyword = keyword
    }
}

public enum Op: Sendable {
    case source(SourceOp)
    case exec(ExecOp)
    case file(FileOp)

    /// The canonical encoding: every field that changes the result, named, in a fixed order.
    /// Fields a source's content stands for (a local path) are left to `Solver.cacheKey`.
    func encode(into k: inout CacheKey, forKey: Bool) {
        switch self {
        case .source(.scratch):
            k.add("op", "source.scratch")
        case .source(.image(let reference, let manifest, let platform)):
            k.add("op", "source.image")
            k.add("manifest", manifest.description)
            if !forKey {
                k.add("reference", reference)
                k.add("platform", platform.description)
            }
        case .source(.local(let name, let path, let excludes)):
            k.add("op", "source.local")
            k.add("excludes", excludes)
            if !forKey {
                k.add("name", name)
                k.add("path", path)
            }
        case .source(.inline(let files)):
            k.add("op", "source.inline")
            k.add("count", "\(files.count)")
            for f in files {
                k.add("name", f.name)
                k.add("content", String(decoding: f.content, as: UTF8.self))
            }
        case .source(.http(let url, let checksum)):
            k.add("op", "source.http")
            k.add("url", url)
            k.add("checksum", checksum?.description ?? "")
        case .source(.git(let g)):
            // For the key the commit stands for the URL, ref and checksum (Solver.cacheKey); a
            // kept .git holds the remote and the ref's name, so they count then.
            k.add("op", "source.git")
            if !forKey || g.keepGitDir {
                k.add("remote", g.remote)
                k.add("ref", g.ref)
            }
            if !forKey {
                k.add("checksum", g.checksum ?? "")
                k.add("fetch-by-commit", g.fetchByCommit ? "1" : "0")
            }
            k.add("subdir", g.subdir)
            k.add("keep-git-dir", g.keepGitDir ? "1" : "0")
            k.add("mtime", g.mtimeCommit ? "commit" : "checkout")
        case .exec(let e):
            k.add("op", "exec")
            k.add("args", e.args)
            k.add("env", e.env)
            k.add("cwd", e.cwd)
            k.add("user", e.user)
            k.add("network", e.network.rawValue)
            k.add("extra-hosts", e.extraHosts.map(\.description))
            k.add("platform", e.platform.normalized.description)
            k.add("stdin", e.stdin.map { String(decoding: $0, as: UTF8.self) } ?? "")
            if let shm = e.shmSize { k.add("shm-size", "\(shm)") }
            if !e.ulimits.isEmpty { k.add("ulimits", e.ulimits.map(\.description)) }
            if !e.mounts.isEmpty {
                k.add("mounts", "\(e.mounts.count)")
                for m in e.mounts {
                    for (name, value) in m.fields { k.add(name, value) }
                }
            }
        case .file(.mkdir(let path, let owner)):
            k.add("op", "file.mkdir")
            k.add("path", path)
            k.add("owner", owner ?? "")
        case .file(.copy(let c)):
            k.add("op", "file.copy")
            k.add("sources", "\(c.sources.count)")
            for src in c.sources {
                k.add("input", "\(src.input)")
                k.add("paths", src.paths)
            }
            k.add("dest", c.destination + (c.destinationIsDirectory ? "/" : ""))
            k.add("chown", c.chown ?? "")
            k.add("chmod", c.chmod.map { String($0, radix: 8) } ?? "")
            k.add("exclude", c.excludes)
            k.add("unpack", c.unpackArchives ? "1" : "0")
            // Only when set: the keys of every other copy stay what they were.
            if c.unpackDownloads { k.add("unpack-downloads", "1") }
        }
    }

    /// Whether the op writes a layer (its bytes then depend on SOURCE_DATE_EPOCH).
    var writesLayer: Bool {
        switch self {
        case .source: return false
        case .exec, .file: return true
        }
    }
}

/// Where an op came from, for errors: the file, the line and the instruction as written.
public struct Origin: Sendable {
    public var file: String
    public var line: Int
    public var instruction: String
    public init(file: String, line: Int, instruction: String) {
        self.file = file
        self.line = line
        self.instruction = instruction
    }
}

/// An op with its inputs. Build vertices through a `Graph`, which gives equal definitions one vertex.
public final class Vertex: Sendable, Hashable, CustomStringConvertible {
    public let op: Op
    public let inputs: [Vertex]
    /// The definition digest (op and inputs' digests): equal digests are one piece of work.
    public let digest: Digest
    /// What the progress display calls it (`[build 3/5] RUN make`); not part of any digest.
    public let name: String
    public let origin: Origin?
    /// `--no-cache` / `--no-cache-filter`: run even when the cache has the key.
    public let ignoreCache: Bool

    init(op: Op, inputs: [Vertex], name: String, origin: Origin?, ignoreCache: Bool) {
        self.op = op
        self.inputs = inputs
        self.name = name
        self.origin = origin
        self.ignoreCache = ignoreCache
        var k = CacheKey(parent: nil)
        op.encode(into: &k, forKey: false)
        k.add("inputs", inputs.map(\.digest.description))
        k.add("ignore-cache", ignoreCache ? "1" : "0")
        digest = k.digest
    }

    public static func == (a: Vertex, b: Vertex) -> Bool { a.digest == b.digest }
    public func hash(into h: inout Hasher) { h.combine(digest) }

    /// One line: the op and its fields, inputs by short digest (for golden files and debugging).
    public var description: String {
        let ins = inputs.map { String($0.digest.hex.prefix(12)) }
        let fields: String
        switch op {
        case .source(.scratch): fields = "source scratch"
        case .source(.image(let r, let m, let p)): fields = "source image \(r) \(m) \(p)"
        case .source(.local(let n, _, let ex)): fields = "source local \(n) excludes=\(ex)"
        case .source(.inline(let files)):
            fields = "source inline " + files.map { "\($0.name)=\(String(decoding: $0.content, as: UTF8.self).debugDescription)" }.joined(separator: " ")
        case .source(.http(let u, let c)): fields = "source http \(u) checksum=\(c?.description ?? "-")"
        case .source(.git(let g)):
            fields = "source git \(g.display) keep-git-dir=\(g.keepGitDir) checksum=\(g.checksum ?? "-")"
                + (g.mtimeCommit ? " mtime=commit" : "")
        case .exec(let e):
            fields = "exec args=\(e.args) env=\(e.env) cwd=\(e.cwd) user=\(e.user) network=\(e.network.rawValue)"
                + (e.extraHosts.isEmpty ? "" : " extra-hosts=\(e.extraHosts.map(\.description))") + " platform=\(e.platform)"
                + (e.stdin.map { " stdin=\(String(decoding: $0, as: UTF8.self).debugDescription)" } ?? "")
                + e.mounts.map { " mount=" + $0.fields.map { "\($0.0)=\($0.1)" }.joined(separator: ",") }.joined()
                + (e.shmSize.map { " shm-size=\($0)" } ?? "") + (e.ulimits.isEmpty ? "" : " ulimits=\(e.ulimits.map(\.description))")
        case .file(.mkdir(let p, let o)): fields = "file mkdir \(p) owner=\(o ?? "-")"
        case .file(.copy(let c)):
            let srcs = c.sources.map { "\($0.input):\($0.paths)" }.joined(separator: " ")
            fields = "file copy \(srcs) -> \(c.destination)\(c.destinationIsDirectory ? "/" : "") chown=\(c.chown ?? "-")"
                + " chmod=\(c.chmod.map { String($0, radix: 8) } ?? "-") exclude=\(c.excludes) unpack=\(c.unpackArchives)"
                + (c.unpackDownloads ? " unpack-downloads" : "")
        }
        return "\(digest.hex.prefix(12)) \(fields)" + (ins.isEmpty ? "" : " inputs=\(ins)")
    }
}

/// Makes vertices, one per definition: adding an op equal to one already added returns the vertex
/// made first (its name and origin stay), so that the solver sees each piece of work once.
public final class Graph: Sendable {
    private let vertices = LockedDictionary<Digest, Vertex>()

    public init() {}

    public func add(_ op: Op, inputs: [Vertex] = [], name: String = "", origin: Origin? = nil, ignoreCache: Bool = false) -> Vertex {
        let vertex = Vertex(op: op, inputs: inputs, name: name, origin: origin, ignoreCache: ignoreCache)
        return vertices.insertIfAbsent(vertex.digest, vertex)
    }

    /// Every vertex reachable from `roots`, inputs before the vertices that read them.
    public static func walk(_ roots: [Vertex]) -> [Vertex] {
        var seen = Set<Digest>(), out: [Vertex] = []
        func visit(_ n: Vertex) {
            guard seen.insert(n.digest).inserted else { return }
            for i in n.inputs { visit(i) }
            out.append(n)
        }
        for r in roots { visit(r) }
        return out
    }

    /// The graph as text, one vertex a line, inputs first: what the lowering tests compare.
    public static func dump(_ roots: [Vertex]) -> String {
        walk(roots).map { $0.description + ($0.name.isEmpty ? "" : "\n    # \($0.name)") }.joined(separator: "\n") + "\n"
    }
}

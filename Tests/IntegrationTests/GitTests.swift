import Foundation
import RBuildTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A git repository made for a test: `work/` (commits, tags, a subdirectory) and its bare clone
/// `repo.git`, ready for `git daemon` (git-daemon-export-ok) and dumb http (update-server-info).
///
/// main: one (v1, v1a annotated) ← two. Files: hello.txt (0755), Dockerfile, sub/dir/inner.txt,
/// sub/Dockerfile.sub, ctx.tar.gz (an archive ADD must not unpack); two adds two.txt.
final class GitRepoFixture {
    let dir: String
    let first: String
    let second: String
    var bare: String { dir + "/repo.git" }

    init(in parent: String) throws {
        dir = parent + "/git"
        let work = dir + "/work"
        try FileManager.default.createDirectory(atPath: work + "/sub/dir", withIntermediateDirectories: true)
        func write(_ path: String, _ text: String, mode: mode_t = 0o644) throws {
            try text.write(toFile: work + "/" + path, atomically: false, encoding: .utf8)
            chmod(work + "/" + path, mode)
        }
        try write("hello.txt", "hello\n", mode: 0o755)
        try write("Dockerfile", "FROM busybox\nCOPY hello.txt /ctx-hello\n")
        try write("sub/dir/inner.txt", "inner\n")
        try write("sub/Dockerfile.sub", "FROM busybox\nCOPY dir/inner.txt /ctx-inner\n")
        try GitRepoFixture.run(["tar", "-czf", work + "/ctx.tar.gz", "-C", work + "/sub", "dir"])
        let git = ["git", "-C", work, "-c", "user.name=t", "-c", "user.email=t@example.com"]
        try GitRepoFixture.run(["git", "init", "-q", "-b", "main", work])
        try GitRepoFixture.run(git + ["add", "-A"])
        try GitRepoFixture.run(git + ["commit", "-q", "-m", "one"])
        try GitRepoFixture.run(git + ["tag", "v1"])
        try GitRepoFixture.run(git + ["tag", "-a", "v1a", "-m", "annotated"])
        first = try GitRepoFixture.run(git + ["rev-parse", "HEAD"]).trimmed
        try write("two.txt", "two\n")
        try GitRepoFixture.run(git + ["add", "-A"])
        try GitRepoFixture.run(git + ["commit", "-q", "-m", "two"])
        second = try GitRepoFixture.run(git + ["rev-parse", "HEAD"]).trimmed
        try GitRepoFixture.run(["git", "clone", "-q", "--bare", work, dir + "/repo.git"])
        FileManager.default.createFile(atPath: dir + "/repo.git/git-daemon-export-ok", contents: nil)
        try GitRepoFixture.run(["git", "-C", dir + "/repo.git", "update-server-info"])
    }

    @discardableResult
    static func run(_ argv: [String]) throws -> String {
        let r = try runProcess("/usr/bin/env", argv)
        guard r.status == 0 else { throw FixtureError(message: "\(argv.joined(separator: " ")): \(r.stderr)") }
        return r.stdout
    }
}

/// A free port on 127.0.0.1 (the kernel's choice, released for the caller to bind).
func freePort() throws -> Int {
    let (fd, port) = try loopbackListener()
    close(fd)
    return port
}

/// Whether something accepts connections on 127.0.0.1:`port`.
func listening(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// `git daemon` serving the repositories under `base` on 127.0.0.1, a free port; stopped on deinit.
/// The daemon program itself runs (not `git daemon`, whose git parent outlived a SIGTERM).
final class GitDaemon {
    let process = Process()
    let port: Int

    init(base: String) throws {
        port = try freePort()
        let libexec = try GitRepoFixture.run(["git", "--exec-path"]).trimmed
        process.executableURL = URL(fileURLWithPath: libexec + "/git-daemon")
        process.arguments = ["--reuseaddr", "--listen=127.0.0.1", "--port=\(port)", "--base-path=" + base, "--export-all", base]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        guard waitFor(seconds: 5, { listening(port) }) else { throw FixtureError(message: "git daemon did not start on port \(port)") }
    }

    deinit { stop() }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// A static file server on 127.0.0.1: GET and HEAD of the files under `root`, 404 otherwise.
/// Enough for git's dumb http protocol and for a tarball.
func staticHTTPServer(root: String) throws -> LoopbackHTTPServer {
    try LoopbackHTTPServer { request, send in
        guard !request.path.contains(".."), let data = FileManager.default.contents(atPath: root + request.path) else {
            _ = send(LoopbackHTTPServer.head(404, [("Content-Length", "0")]))
            return
        }
        guard send(LoopbackHTTPServer.head(200, [("Content-Type", "application/octet-stream"), ("Content-Length", "\(data.count)")])),
              request.method != "HEAD" else { return }
        _ = send(Array(data))
    }
}

@Suite("git sources: ADD of a git URL, git and tarball contexts", .enabled(if: Env.enabled))
struct GitTests {
    /// Each form of ref over git daemon, a subdir, --keep-git-dir, --checksum, --chown/--chmod;
    /// archives in the repository stay archives.
    @Test func addFromGitDaemon() throws {
        let b = try BuildFixture()
        let repo = try GitRepoFixture(in: b.fs.dir)
        let daemon = try GitDaemon(base: repo.dir)
        let url = "git://127.0.0.1:\(daemon.port)/repo.git"
        let ctx = try b.context(["Dockerfile": """
            FROM busybox
            ADD \(url)#main:sub /sub/
            ADD \(url)#v1 /tag/
            ADD \(url)#v1a /atag/
            ADD \(url)#\(repo.first) /sha/
            ADD --checksum=\(repo.first.prefix(12)) \(url)#v1 /checked/
            ADD --chmod=0640 \(url)?ref=v1&subdir=sub/dir /modes/
            ADD --keep-git-dir=true \(url)#v1a /kept/
            ADD --keep-git-dir=true \(url)#\(repo.first) /keptsha/
            ADD \(url) /default/
            """])
        let r = try b.build(["-t", "git:1", "--provenance", "mode=min"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        // The provenance names each git source by its remote and ref, with the commit as sha1.
        let provenance = try rbuild(["inspect"] + b.root + ["--attestations", "git:1"]).stdout
        #expect(provenance.contains("\"uri\" : \"\(url)#v1\"") && provenance.contains("\"sha1\" : \"\(repo.first)\""), "\(provenance)")
        let out = try b.sh("git:1", """
            cat /sub/dir/inner.txt /tag/hello.txt /atag/hello.txt /sha/hello.txt /checked/hello.txt /modes/inner.txt /default/two.txt
            ls /sub; ls /tag; test -e /tag/two.txt || echo no-two; test -e /tag/.git || echo no-git
            stat -c '%u:%g %a %n' /tag/hello.txt /tag/Dockerfile /modes/inner.txt
            tar -tzf /tag/ctx.tar.gz
            cat /kept/.git/HEAD; ls /kept/.git/refs/tags; grep -c url /kept/.git/config; cat /keptsha/.git/HEAD
            """)
        #expect(out == """
            inner
            hello
            hello
            hello
            hello
            inner
            two
            Dockerfile.sub
            dir
            Dockerfile
            ctx.tar.gz
            hello.txt
            sub
            no-two
            no-git
            0:0 755 /tag/hello.txt
            0:0 644 /tag/Dockerfile
            0:0 640 /modes/inner.txt
            dir/
            dir/inner.txt
            \(repo.first)
            v1a
            1
            \(repo.first)

            """)
        if Env.hasRange {
            try "FROM busybox\nADD --chown=1:2 \(url)#v1:sub /owned/\n".write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
            #expect(try b.build(["-t", "git:2"], ctx).status == 0)
            #expect(try b.sh("git:2", "stat -c '%u:%g' /owned/dir/inner.txt") == "1:2\n")
        }
    }

    /// Over dumb http (the static files `git update-server-info` writes): the first build fetches,
    /// a second one only asks for the refs (CACHED, no object fetched), and a commit the state
    /// dir has builds with the server gone.
    @Test func dumbHTTPAndTheSecondBuild() throws {
        let b = try BuildFixture()
        let repo = try GitRepoFixture(in: b.fs.dir)
        let server = try staticHTTPServer(root: repo.dir)
        let url = "http://127.0.0.1:\(server.port)/repo.git"
        let ctx = try b.context(["Dockerfile": "FROM busybox\nADD \(url)#main:sub /sub/\n"])
        let first = try b.build(["-t", "h:1"], ctx)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(try b.sh("h:1", "cat /sub/dir/inner.txt") == "inner\n")
        #expect(server.requests.contains { $0.contains("/objects/") })
        server.forgetRequests()
        let second = try b.build(["-t", "h:2"], ctx)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(cachedSteps(second.stderr).contains { $0.contains("ADD \(url)#main:sub") }, "\(second.stderr)")
        #expect(!server.requests.contains { $0.contains("/objects/") }, "\(server.requests)")
        server.stop()
        // Not cached as a step (another destination), but the commit is in the state dir.
        try "FROM busybox\nADD \(url)#\(repo.second) /again/\n".write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
        let offline = try b.build(["-t", "h:3"], ctx)
        #expect(offline.status == 0, "\(offline.stderr)")
        #expect(try b.sh("h:3", "cat /again/two.txt") == "two\n")
    }

    /// An unknown ref, a wrong checksum, an unreachable repository: exit 1, the URL, the ref and
    /// the instruction named, and nothing fetched into the state dir.
    @Test func errorsSayWhatAndWhere() throws {
        let b = try BuildFixture()
        let repo = try GitRepoFixture(in: b.fs.dir)
        let daemon = try GitDaemon(base: repo.dir)
        let url = "git://127.0.0.1:\(daemon.port)/repo.git"
        let closed = try freePort()
        for (line, said) in [("ADD \(url)#nope /x/", "has no branch, tag or ref \"nope\""),
                             ("ADD --checksum=deadbeef \(url)#v1 /x/", "checksum mismatch for \(url)#v1: expected commit deadbeef"),
                             ("ADD --checksum=\(repo.second) \(url)#\(repo.first) /x/", "checksum mismatch"),
                             ("ADD git://127.0.0.1:\(closed)/repo.git#main /x/", "cannot reach the git repository git://127.0.0.1:\(closed)/repo.git"),
                             ("COPY \(url)#main /x/", "source can't be a git URL for COPY")] {
            let ctx = try b.context(["Dockerfile": "FROM busybox\n\(line)\n"], name: "e")
            let r = try b.build([], ctx)
            #expect(r.status == 1, "\(line): \(r.stderr)")
            #expect(r.stderr.contains(said), "\(line): \(r.stderr)")
            #expect(r.stderr.contains("Dockerfile:2") && r.stderr.contains(">>> \(line)"), "\(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: b.state + "/git"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.state + "/tmp").isEmpty)
        let ctx = try b.build([], "git://127.0.0.1:\(closed)/repo.git#main")
        #expect(ctx.status == 1 && ctx.stderr.contains("the build context: cannot reach the git repository"), "\(ctx.stderr)")
        let named = try b.build(["--build-context", "src=\(url)#nope"],
                                try b.context(["Dockerfile": "FROM busybox\nCOPY --from=src hello.txt /\n"], name: "n"))
        #expect(named.status == 1 && named.stderr.contains("--build-context src: the git repository"), "\(named.stderr)")
    }

    /// A git URL as the context: its Dockerfile (or -f's, in the repository, or an absolute
    /// local one) and files; over git daemon and dumb http.
    @Test func gitContext() throws {
        let b = try BuildFixture()
        let repo = try GitRepoFixture(in: b.fs.dir)
        let daemon = try GitDaemon(base: repo.dir)
        let server = try staticHTTPServer(root: repo.dir)
        let r = try b.build(["-t", "c:1"], "git://127.0.0.1:\(daemon.port)/repo.git#v1")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.sh("c:1", "cat /ctx-hello") == "hello\n")
        let sub = try b.build(["-t", "c:2", "-f", "Dockerfile.sub"], "http://127.0.0.1:\(server.port)/repo.git#main:sub")
        #expect(sub.status == 0, "\(sub.stderr)")
        #expect(try b.sh("c:2", "cat /ctx-inner") == "inner\n")
        let local = try b.context(["Dockerfile.local": "FROM busybox\nCOPY two.txt /ctx-two\n"], name: "local")
        let abs = try b.build(["-t", "c:3", "-f", local + "/Dockerfile.local"], "git://127.0.0.1:\(daemon.port)/repo.git")
        #expect(abs.status == 0, "\(abs.stderr)")
        #expect(try b.sh("c:3", "cat /ctx-two") == "two\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.state + "/tmp").isEmpty)
    }

    /// `--build-context NAME=GITURL` and `NAME=https://…/x.tar.gz` (unpacked), used by FROM,
    /// COPY --from and RUN --mount.
    @Test func namedGitAndTarballContexts() throws {
        let b = try BuildFixture()
        let repo = try GitRepoFixture(in: b.fs.dir)
        let daemon = try GitDaemon(base: repo.dir)
        let server = try staticHTTPServer(root: repo.dir + "/work")
        let ctx = try b.context(["Dockerfile": """
            FROM busybox
            COPY --from=src dir/inner.txt /from-git
            COPY --from=tb dir/inner.txt /from-tarball
            RUN --mount=from=src,target=/m cat /m/Dockerfile.sub > /mounted
            """])
        let r = try b.build(["-t", "n:1", "--build-context", "src=git://127.0.0.1:\(daemon.port)/repo.git#main:sub",
                             "--build-context", "tb=http://127.0.0.1:\(server.port)/ctx.tar.gz"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.sh("n:1", "cat /from-git /from-tarball; head -1 /mounted") == "inner\ninner\nFROM busybox\n")
        let base = try b.context(["Dockerfile": "FROM src\n"], name: "base")
        let f = try b.build(["-o", "type=local,dest=\(b.fs.dir)/out", "--build-context", "src=git://127.0.0.1:\(daemon.port)/repo.git#v1:sub"], base)
        #expect(f.status == 0, "\(f.stderr)")
        #expect(try b.file(b.fs.dir + "/out/dir/inner.txt") == "inner\n")
    }

    /// A bake target whose context is a git URL (its dockerfile a path in the checkout), one
    /// with a git named context, and a `target:` context built from git.
    @Test func bakeWithGitContexts() throws {
        let b = try BuildFixture()
        let repo = try GitRepoFixture(in: b.fs.dir)
        let daemon = try GitDaemon(base: repo.dir)
        let url = "git://127.0.0.1:\(daemon.port)/repo.git"
        let ctx = try b.context(["Dockerfile": "FROM busybox\nCOPY --from=src hello.txt /h\nCOPY --from=sub /ctx-inner /i\n",
                                 "docker-bake.hcl": """
            group "default" { targets = ["fromgit", "named"] }
            target "fromgit" {
              context = "\(url)#main:sub"
              dockerfile = "Dockerfile.sub"
              tags = ["bg:1"]
            }
            target "named" {
              contexts = { src = "\(url)#v1", sub = "target:fromgit" }
              tags = ["bg:2"]
            }
            """], name: "bake")
        let r = try BakeTests().bake(b, ctx, [])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.sh("bg:1", "cat /ctx-inner") == "inner\n")
        #expect(try b.sh("bg:2", "cat /h /i") == "hello\ninner\n")
    }

    /// `-f` naming a Dockerfile outside the context directory (and its NAME.dockerignore).
    @Test func dockerfileOutsideTheContext() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["data.txt": "data\n", "skip.txt": "no\n"], name: "ctx")
        let other = try b.context(["Dockerfile": "FROM busybox\nCOPY . /in/\n", "Dockerfile.dockerignore": "skip.txt\n"], name: "elsewhere")
        let r = try b.build(["-t", "f:1", "-f", other + "/Dockerfile"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.sh("f:1", "ls /in") == "data.txt\n")
    }
}

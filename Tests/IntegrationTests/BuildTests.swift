import Foundation
import RBuild
import Testing

/// A state dir holding `busybox:latest` (the fixture root filesystem, imported), and build
/// contexts made from file maps.
final class BuildFixture {
    let fs: Rootfs
    let state: String
    var root: [String] { ["--root", state] }

    init() throws {
        fs = try Rootfs()
        state = fs.dir + "/state"
        let r = try rbuild(["import"] + ["--root", state, fs.path, "busybox:latest"])
        guard r.status == 0 else { throw FixtureError(message: "import: \(r.stderr)") }
    }

    /// A context directory with these files (path → content; a content starting with "->" makes a
    /// symlink to the rest).
    func context(_ files: [String: String], name: String = "ctx") throws -> String {
        let dir = fs.dir + "/" + name
        for (path, content) in files {
            let full = dir + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if content.hasPrefix("->") {
                try FileManager.default.createSymbolicLink(atPath: full, withDestinationPath: String(content.dropFirst(2)))
            } else {
                try content.write(toFile: full, atomically: false, encoding: .utf8)
            }
        }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    func build(_ args: [String], _ context: String, environment: [String: String]? = nil,
               timeout: Double? = nil) throws -> Result {
        try rbuild(["build"] + root + ["--progress", "plain"] + args + [context], environment: environment, timeout: timeout)
    }

    /// Starts `rbuild build CONTEXT`, waits until its progress shows `marker` (and a little
    /// more), then kills rbuild outright and waits for it.
    func killBuild(_ context: String, once marker: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Env.binary)
        p.arguments = ["build"] + root + ["--progress", "plain", context]
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        try p.run()
        _ = read(err, until: marker)
        usleep(300_000)
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    /// `rbuild run IMAGE -- sh -c SCRIPT`, stdout.
    func sh(_ image: String, _ script: String, _ options: [String] = []) throws -> String {
        let r = try rbuild(["run"] + root + options + [image, "--", "/bin/sh", "-c", script])
        #expect(r.status == 0, "\(r.stderr)")
        return r.stdout
    }

    func file(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }
}

/// The numbers of the steps reported CACHED in plain progress output.
func cachedSteps(_ stderr: String) -> [String] {
    let cached = Set(stderr.split(separator: "\n").filter { $0.hasSuffix(" CACHED") }.map { $0.split(separator: " ")[0] })
    return stderr.split(separator: "\n").compactMap { line in
        let parts = line.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, cached.contains(parts[0]), parts[1].hasPrefix("[") else { return nil }
        return String(parts[1])
    }
}

@Suite("rbuild build, as an unprivileged user", .enabled(if: Env.enabled))
struct BuildTests {
    static let allInstructions = """
    # syntax=docker/dockerfile:1
    ARG BASE=busybox
    FROM $BASE AS builder
    RUN mkdir -p /out && echo built > /out/artifact
    FROM busybox AS unused
    RUN exit 1
    FROM ${BASE}
    ARG VERSION=1.0
    LABEL version=$VERSION org.example.name="demo app"
    ENV A=1 B="two words"
    WORKDIR app
    WORKDIR sub
    COPY *.txt ./
    COPY dir /copied/
    COPY link /linked
    COPY --chmod=0700 a.txt /modes/a
    COPY --chown=1234:5678 b.txt /owned/b
    COPY --from=builder /out/artifact /from-builder
    ADD arch.tar /extracted/
    COPY <<EOF /heredoc.txt
    version $VERSION
    EOF
    RUN <<EOF
    echo "heredoc run in $(pwd)" > /run-heredoc
    EOF
    SHELL ["/bin/sh", "-ec"]
    RUN echo "$A $B $VERSION" > /env.txt && rm /bin/vi
    RUN ["/bin/sh", "-c", "echo exec-form > /exec.txt"]
    EXPOSE 8080 53/udp
    VOLUME /data
    STOPSIGNAL SIGTERM
    HEALTHCHECK --interval=5s CMD true
    USER 1000:1000
    ENTRYPOINT ["/bin/sh", "-c"]
    CMD ["echo default"]
    """

    func instructionContext(_ b: BuildFixture) throws -> String {
        let ctx = try b.context(["a.txt": "a\n", "b.txt": "b\n", "dir/nested/n.txt": "n\n", "link": "->a.txt",
                                 "secret.key": "no\n", ".dockerignore": "*.key\n", "Dockerfile": BuildTests.allInstructions])
        let tar = try runProcess("/bin/tar", ["-cf", ctx + "/arch.tar", "-C", ctx, "dir"])
        #expect(tar.status == 0)
        return ctx
    }

    /// Every instruction, on every snapshotter: the image's files (read in a sandbox and after
    /// `umoci unpack`), its config (skopeo), its layers' owners and modes.
    /// A RUN step cannot reach the terminal rbuild runs in (CVE-2017-5226 class): no
    /// controlling terminal (its own session), /dev/tty unopenable, stdin /dev/null.
    @Test("a RUN step has no terminal, even when rbuild runs in one")
    func runStepHasNoTerminal() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": """
            FROM busybox
            RUN echo tty_nr=$(cut -d' ' -f7 /proc/self/stat); echo x > /dev/tty || echo no-dev-tty; test -t 0 || echo stdin-not-tty
            """])
        let cmd = ([Env.binary, "build"] + b.root + ["--progress", "plain", ctx]).joined(separator: " ")
        let r = try runProcess("/usr/bin/script", ["-qec", cmd, "/dev/null"])
        #expect(r.status == 0, "\(r.stdout)")
        #expect(r.stdout.contains("tty_nr=0") && r.stdout.contains("no-dev-tty") && r.stdout.contains("stdin-not-tty"), "\(r.stdout)")
    }

    @Test(arguments: ["overlay", "fuse-overlayfs", "copy"])
    func everyInstruction(snapshotter: String) throws {
        let b = try BuildFixture()
        let ctx = try instructionContext(b)
        let out = b.fs.dir + "/out.tar"
        let r = try b.build(["--snapshotter", snapshotter, "-t", "demo:1", "-o", "type=oci,dest=\(out)", "-o", "type=image"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!r.stderr.contains("[unused"), "a stage the target does not need is not built")
        // The image's ENTRYPOINT is `sh -c`: the command is one script argument.
        let run = try rbuild(["run"] + b.root + ["--snapshotter", snapshotter, "--user", "0", "demo:1", "--", """
            cat /app/sub/a.txt /app/sub/b.txt /copied/nested/n.txt /linked /from-builder /extracted/dir/nested/n.txt \
                /heredoc.txt /run-heredoc /env.txt /exec.txt
            ls /app/sub; test -e /bin/vi || echo vi-gone; test -e /app/sub/secret.key || echo no-key
            stat -c '%a %u:%g %n' /modes/a /owned/b /owned
            """])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout == """
            a
            b
            n
            a
            built
            n
            version 1.0
            heredoc run in /app/sub
            1 two words 1.0
            exec-form
            a.txt
            b.txt
            vi-gone
            no-key
            700 0:0 /modes/a
            \(Env.hasRange ? "644 1234:5678 /owned/b" : "644 0:0 /owned/b")
            \(Env.hasRange ? "755 1234:5678 /owned" : "755 0:0 /owned")

            """)
        // The config, as skopeo reads it from the archive.
        let inspect = try runProcess("/usr/bin/skopeo", ["inspect", "--config", "oci-archive:" + out])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let config = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as! [String: Any]
        let c = config["config"] as! [String: Any]
        #expect(c["User"] as? String == "1000:1000")
        #expect(c["WorkingDir"] as? String == "/app/sub")
        #expect(c["Entrypoint"] as? [String] == ["/bin/sh", "-c"])
        #expect(c["Cmd"] as? [String] == ["echo default"])
        #expect((c["Env"] as? [String])?.contains("B=two words") == true)
        #expect((c["Labels"] as? [String: String]) == ["version": "1.0", "org.example.name": "demo app"])
        #expect(Set((c["ExposedPorts"] as? [String: Any])?.keys.map { $0 } ?? []) == ["8080/tcp", "53/udp"])
        #expect((c["Volumes"] as? [String: Any])?.keys.first == "/data")
        #expect(c["StopSignal"] as? String == "SIGTERM")
        // The layers, as umoci unpacks them (rootless) and as tar lists them.
        let layout = b.fs.dir + "/layout"
        try FileManager.default.createDirectory(atPath: layout, withIntermediateDirectories: true)
        #expect(try runProcess("/bin/tar", ["-xf", out, "-C", layout]).status == 0)
        let unpacked = b.fs.dir + "/unpacked"
        let umoci = try runProcess("/usr/bin/umoci", ["unpack", "--rootless", "--image", layout + ":1", unpacked])
        #expect(umoci.status == 0, "\(umoci.stderr)")
        #expect(try b.file(unpacked + "/rootfs/env.txt") == "1 two words 1.0\n")
        #expect(!FileManager.default.fileExists(atPath: unpacked + "/rootfs/bin/vi"))
        let listing = try layerListing(layout)
        #expect(listing.contains("-rw-r--r-- 1234/5678") && listing.contains("owned/b"), "\(listing)")
        #expect(listing.contains("-rwx------ 0/0") && listing.contains("modes/a"))
        #expect(listing.contains("bin/.wh.vi"))
    }

    /// `tar -tv` of every layer of an OCI layout.
    func layerListing(_ layout: String) throws -> String {
        var out = ""
        for blob in try FileManager.default.contentsOfDirectory(atPath: layout + "/blobs/sha256") {
            let r = try runProcess("/bin/tar", ["-tvzf", layout + "/blobs/sha256/" + blob])
            if r.status == 0 { out += r.stdout }
        }
        return out
    }

    /// Warm rebuilds hit the cache; changing one context file re-runs what follows its COPY;
    /// --no-cache and --no-cache-filter re-run what they name.
    @Test func cacheHitsAndMisses() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["one.txt": "1\n", "two.txt": "2\n", "Dockerfile": """
            FROM busybox AS base
            RUN echo base > /base
            FROM base
            COPY one.txt /one
            RUN cat /one > /copy-of-one
            COPY two.txt /two
            RUN cat /two > /copy-of-two
            """])
        let first = try b.build(["-t", "c:1"], ctx)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(cachedSteps(first.stderr).isEmpty)
        let warm = try b.build(["-t", "c:1"], ctx)
        #expect(cachedSteps(warm.stderr).count == 5, "\(warm.stderr)")
        // A touched file (a fresh clone) keeps the cache: keys have bytes and modes, not mtimes.
        var times = [timespec(tv_sec: 1_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000, tv_nsec: 0)]
        utimensat(AT_FDCWD, ctx + "/one.txt", &times, 0)
        #expect(cachedSteps(try b.build(["-t", "c:1"], ctx).stderr).count == 5)
        try "2 changed\n".write(toFile: ctx + "/two.txt", atomically: false, encoding: .utf8)
        let changed = try b.build(["-t", "c:2"], ctx)
        #expect(cachedSteps(changed.stderr) == ["[base 2/2] RUN echo base > /base", "[2/5] COPY one.txt /one", "[3/5] RUN cat /one > /copy-of-one"],
                "\(changed.stderr)")
        #expect(try b.sh("c:2", "cat /copy-of-two") == "2 changed\n")
        let noCache = try b.build(["--no-cache", "-t", "c:3"], ctx)
        #expect(cachedSteps(noCache.stderr).isEmpty)
        let filtered = try b.build(["--no-cache-filter", "base", "-t", "c:4"], ctx)
        #expect(!cachedSteps(filtered.stderr).contains("[base 2/2] RUN echo base > /base"))
        #expect(cachedSteps(filtered.stderr).contains("[2/5] COPY one.txt /one"), "\(filtered.stderr)")
        // A build arg a RUN sees is part of its key.
        let args = try b.context(["Dockerfile": "FROM busybox\nARG X=1\nRUN echo $X > /x\n"], name: "args")
        #expect(try b.build(["-t", "a:1"], args).status == 0)
        let same = try b.build(["-t", "a:1"], args)
        #expect(cachedSteps(same.stderr).count == 1)
        let other = try b.build(["--build-arg", "X=2", "-t", "a:2"], args)
        #expect(cachedSteps(other.stderr).isEmpty)
        #expect(try b.sh("a:2", "cat /x") == "2\n")
        // prune keeps the build cache's layers; prune --all forgets the cache.
        #expect(try rbuild(["rmi"] + b.root + ["a:1"]).status == 0)
        #expect(try rbuild(["prune"] + b.root).status == 0)
        #expect(cachedSteps(try b.build([], args).stderr).count == 1)
        #expect(try rbuild(["prune", "--all"] + b.root).status == 0)
        #expect(cachedSteps(try b.build([], args).stderr).isEmpty)
    }

    /// --target, build args in FROM, COPY --from an index (that stages run at once:
    /// CacheKeyTests.independentStagesRunAtOnce).
    @Test func stagesTargetsAndArgs() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": """
            ARG IMAGE=busybox
            FROM ${IMAGE} AS a
            RUN echo a > /a
            FROM ${IMAGE} AS b
            RUN echo b > /b
            FROM ${IMAGE} AS broken
            RUN exit 7
            FROM ${IMAGE}
            COPY --from=a /a /a
            COPY --from=1 /b /b
            RUN --network=none ls /sys/class/net > /net
            """])
        let r = try b.build(["-t", "s:1"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.sh("s:1", "cat /a /b /net") == "a\nb\nlo\n")
        let t = try b.build(["--target", "broken"], ctx)
        #expect(t.status == 1)
        #expect(t.stderr.contains("exit code: 7"))
        let missing = try b.build(["--target", "nope"], ctx)
        #expect(missing.stderr.contains("target stage \"nope\" could not be found"))
    }

    /// A failing RUN names the Dockerfile line, the command, the exit code and the last output,
    /// and leaves no active snapshot or temporary layer behind.
    @Test(arguments: ["overlay", "copy"])
    func failingRun(snapshotter: String) throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": "FROM busybox\nRUN echo ok\nRUN echo first; echo 'something broke' >&2; exit 3\n"])
        let r = try b.build(["--snapshotter", snapshotter], ctx)
        #expect(r.status == 1)
        #expect(r.stderr.contains("Dockerfile:3"), "\(r.stderr)")
        #expect(r.stderr.contains("did not complete successfully: exit code: 3"))
        #expect(r.stderr.contains("something broke"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.state + "/snapshots/\(snapshotter)/active").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.state + "/tmp").isEmpty)
        // Bad Dockerfiles and missing sources say what is wrong, and where.
        let bad = try b.context(["Dockerfile": "FROM busybox\nCOPY missing.txt /\n"], name: "bad")
        let m = try b.build([], bad)
        #expect(m.status == 1)
        #expect(m.stderr.contains("\"missing.txt\" not found"), "\(m.stderr)")
        #expect(m.stderr.contains("Dockerfile:2"))
        // Not local, and its registry (a closed port here) cannot be reached: both are said.
        let noBase = try b.context(["Dockerfile": "FROM 127.0.0.1:9/nothing:here\n"], name: "nobase")
        let nb = try b.build([], noBase)
        #expect(nb.stderr.contains("127.0.0.1:9/nothing:here is not in the local store") && nb.stderr.contains("up and reachable"), "\(nb.stderr)")
        let multi = try b.context(["a": "", "b": "", "Dockerfile": "FROM busybox\nCOPY a b /dest\n"], name: "multi")
        #expect(try b.build([], multi).stderr.contains("the destination must be a directory and end with a /"))
    }

    /// COPY never reads outside the context: a symlink named as a source resolves inside it,
    /// and one inside a copied directory stays a symlink.
    @Test func copyStaysInsideTheContext() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["evil": "->/etc/hostname", "up": "->../../../../etc", "d/inner": "->/etc/passwd", "d/f": "f\n",
                                 "Dockerfile": "FROM busybox\nCOPY d /d/\nRUN test -L /d/inner && readlink /d/inner > /link\n"])
        let ok = try b.build(["-t", "l:1"], ctx)
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(try b.sh("l:1", "cat /link /d/f") == "/etc/passwd\nf\n")
        for source in ["evil", "up/passwd"] {
            try "FROM busybox\nCOPY \(source) /x\n".write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
            let r = try b.build([], ctx)
            #expect(r.status == 1, "COPY \(source) must not reach the host's /etc")
            #expect(r.stderr.contains("not found"), "\(r.stderr)")
        }
    }

    /// ONBUILD triggers run in the image that uses the base; not again in its children.
    @Test func onbuildTriggers() throws {
        let b = try BuildFixture()
        let base = try b.context(["Dockerfile": "FROM busybox\nONBUILD COPY hello /hello\nONBUILD RUN echo triggered >> /log\n"], name: "base")
        #expect(try b.build(["-t", "onbase:1"], base).status == 0)
        let child = try b.context(["hello": "hi\n", "Dockerfile": "FROM onbase:1\nRUN echo child >> /log\n"], name: "child")
        let r = try b.build(["-t", "onchild:1"], child)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.sh("onchild:1", "cat /hello /log") == "hi\ntriggered\nchild\n")
        let grand = try b.context(["Dockerfile": "FROM onchild:1\nRUN cat /log\n"], name: "grand")
        let g = try b.build(["-t", "ongrand:1"], grand)
        #expect(g.status == 0, "\(g.stderr)")
        #expect(try b.sh("ongrand:1", "cat /log") == "triggered\nchild\n")
    }

    /// USER by name and number, and COPY --chown by name (these need several ids: subuid mode).
    @Test(.enabled(if: Env.hasRange)) func usersAndOwners() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["f": "f\n", "Dockerfile": """
            FROM busybox
            COPY --chown=nobody:nogroup f /owned-by-nobody
            USER nobody
            RUN id -u > /tmp/id-name
            USER 1234:1234
            WORKDIR /home/u1234
            RUN id -u > id-number && pwd >> id-number
            """])
        let r = try b.build(["-t", "u:1"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.sh("u:1", "cat /tmp/id-name /home/u1234/id-number; stat -c '%u:%g' /owned-by-nobody /home/u1234",
                         ["--user", "0"]) == "65534\n1234\n/home/u1234\n65534:65534\n1234:1234\n")
    }

    /// With SOURCE_DATE_EPOCH, two builds from scratch give byte-identical archives.
    @Test func reproducible() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["f": "f\n", "Dockerfile": "FROM busybox\nCOPY f /f\nRUN echo built > /built && touch /x && mkdir -p /var/y\n"])
        var env = ProcessInfo.processInfo.environment
        env["SOURCE_DATE_EPOCH"] = "1700000000"
        var sums: [String] = []
        for i in 0..<2 {
            for kind in ["oci", "docker"] {
                let out = b.fs.dir + "/\(kind)-\(i).tar"
                let r = try b.build(["--no-cache", "-t", "r:1", "-o", "type=\(kind),dest=\(out)"], ctx, environment: env)
                #expect(r.status == 0, "\(r.stderr)")
                sums.append(try runProcess("/usr/bin/sha256sum", [out]).stdout.split(separator: " ")[0].description)
            }
            sleep(1)
        }
        #expect(sums[0] == sums[2], "oci archives differ")
        #expect(sums[1] == sums[3], "docker archives differ")
    }

    /// type=local, type=tar, type=oci,tar=false (checked by oci-image-tool), type=docker.
    @Test func exporters() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["f": "f\n", "Dockerfile": "FROM busybox\nCOPY f /f\nRUN rm -r /usr && echo x > /etc/motd\n"])
        let dir = b.fs.dir + "/local", tar = b.fs.dir + "/root.tar", layout = b.fs.dir + "/layout", docker = b.fs.dir + "/docker.tar"
        let r = try b.build(["-t", "e:1", "-o", "type=local,dest=\(dir)", "-o", "type=tar,dest=\(tar)",
                             "-o", "type=oci,dest=\(layout),tar=false", "-o", "type=docker,dest=\(docker)",
                             "--iidfile", b.fs.dir + "/iid", "--metadata-file", b.fs.dir + "/meta.json"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.file(dir + "/f") == "f\n")
        #expect(try b.file(dir + "/etc/motd") == "x\n")
        #expect(!FileManager.default.fileExists(atPath: dir + "/usr"))
        #expect(FileManager.default.fileExists(atPath: dir + "/bin/busybox"))
        let listing = try runProcess("/bin/tar", ["-tf", tar]).stdout
        #expect(listing.contains("bin/busybox") && listing.contains("etc/motd") && !listing.contains("usr/"))
        let validate = try runProcess("/usr/bin/oci-image-tool", ["validate", "--type", "image", "--ref", "name=1", layout])
        #expect(validate.status == 0, "\(validate.stdout)\(validate.stderr)")
        let manifest = try runProcess("/bin/tar", ["-xOf", docker, "manifest.json"]).stdout
        #expect(manifest.contains("\"RepoTags\":[\"e:1\"]"), "\(manifest)")
        let iid = try b.file(b.fs.dir + "/iid")
        #expect(iid.hasPrefix("sha256:"))
        let meta = try b.file(b.fs.dir + "/meta.json")
        #expect(meta.contains("containerimage.digest") && meta.contains(iid))
        #expect(try rbuild(["build"] + b.root + ["-o", "type=nope", ctx]).stderr.contains("unknown type \"nope\""))
        // zstd layers, and rawjson progress (one JSON object per line).
        let zstd = b.fs.dir + "/zstd"
        let z = try rbuild(["build"] + b.root + ["--progress", "rawjson", "--no-cache", "-o", "type=oci,dest=\(zstd),tar=false,compression=zstd", ctx])
        #expect(z.status == 0, "\(z.stderr)")
        let index = try b.file(zstd + "/index.json")
        let manifestDigest = try #require(index.range(of: #"sha256:[0-9a-f]{64}"#, options: .regularExpression)).lowerBound
        let hex = index[manifestDigest...].dropFirst(7).prefix(64)
        let zmanifest = try b.file(zstd + "/blobs/sha256/" + hex)
        #expect(zmanifest.contains("application/vnd.oci.image.layer.v1.tar+zstd"), "\(zmanifest)")
        let events = z.stderr.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(events.count == z.stderr.split(separator: "\n").count, "every line is JSON")
        #expect(events.contains { $0["event"] as? String == "started" && ($0["name"] as? String)?.contains("RUN rm -r /usr") == true })
        #expect(events.contains { $0["event"] as? String == "done" })
        // The live view, forced on a pipe: redrawn in place, ending FINISHED with every step.
        let tty = try rbuild(["build"] + b.root + ["--progress", "tty", "--no-cache", ctx])
        #expect(tty.status == 0, "\(tty.stderr)")
        #expect(tty.stderr.contains("\u{1b}[2K") && tty.stderr.contains("FINISHED"), "\(tty.stderr)")
        #expect(tty.stderr.contains(" => [3/3] RUN rm -r /usr && echo x > /etc/motd"))
    }

    /// A Dockerfile on stdin, named build contexts (a directory, an OCI layout), ADD from a URL
    /// with --checksum.
    @Test func stdinContextsAndURLs() throws {
        let b = try BuildFixture()
        let r = try rbuild(["build"] + b.root + ["--progress", "plain", "-t", "stdin:1", "-"],
                           stdin: "FROM busybox\nRUN echo from-stdin > /s\n")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.sh("stdin:1", "cat /s") == "from-stdin\n")
        let noctx = try rbuild(["build"] + b.root + ["-"], stdin: "FROM busybox\nCOPY x /x\n")
        #expect(noctx.stderr.contains("no context"))
        // Named contexts: a directory, an image, an OCI layout written by an earlier build.
        let extra = try b.context(["data.txt": "extra\n"], name: "extra")
        let layout = b.fs.dir + "/bb"
        let first = try b.build(["-o", "type=oci,dest=\(layout),tar=false", "-t", "bb:7"],
                                try b.context(["Dockerfile": "FROM busybox\nRUN echo in-layout > /layout\n"], name: "bb"))
        #expect(first.status == 0, "\(first.stderr)")
        let ctx = try b.context(["Dockerfile": """
            FROM base
            COPY --from=extra data.txt /data.txt
            COPY --from=bb /layout /layout
            """], name: "named")
        let n = try b.build(["-t", "named:1", "--build-context", "extra=\(extra)", "--build-context", "base=docker-image://busybox:latest",
                             "--build-context", "bb=oci-layout://\(layout):7"], ctx)
        #expect(n.status == 0, "\(n.stderr)")
        #expect(try b.sh("named:1", "cat /data.txt /layout") == "extra\nin-layout\n")
        // ADD from a URL, served on 127.0.0.1.
        let server = try LoopbackServer(files: ["file.txt": "downloaded\n"])
        let port = server.port
        let sum = "sha256:" + (try runProcess("/usr/bin/sha256sum", [server.dir + "/file.txt"]).stdout.split(separator: " ")[0])
        let url = try b.context(["Dockerfile": """
            FROM busybox
            ADD --checksum=\(sum) http://127.0.0.1:\(port)/file.txt /dl/
            """], name: "url")
        let u = try b.build(["-t", "url:1"], url)
        #expect(u.status == 0, "\(u.stderr)")
        #expect(try b.sh("url:1", "cat /dl/file.txt; stat -c %a /dl/file.txt") == "downloaded\n600\n")
        try "FROM busybox\nADD --checksum=sha256:\(String(repeating: "0", count: 64)) http://127.0.0.1:\(port)/file.txt /dl/\n"
            .write(toFile: url + "/Dockerfile", atomically: false, encoding: .utf8)
        let bad = try b.build([], url)
        #expect(bad.stderr.contains("checksum mismatch"), "\(bad.stderr)")
    }

    /// build, prune, save, push and check enter rbuild's user namespace before their arguments
    /// are parsed (the inner process parses): a mistake is still reported once, with
    /// ArgumentParser's exit status, and help still works.
    @Test func argumentMistakesFromTheUserNamespace() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": "FROM busybox\n"])
        for args in [["build", "--no-such-flag", ctx], ["prune", "--bogus"], ["save"], ["push"], ["check", "--bogus"]] {
            let r = try rbuild(args + b.root)
            #expect(r.status == 64, "\(args): \(r.status) \(r.stderr)")
            #expect(r.stderr.components(separatedBy: "Error: ").count == 2, "one message: \(r.stderr)")
            #expect(r.stdout.isEmpty)
        }
        let help = try rbuild(["build", "--help"])
        #expect(help.status == 0 && help.stdout.contains("USAGE: rbuild build"), "\(help.stdout)\(help.stderr)")
        #expect(try b.build(["-q"], ctx).status == 0)
    }

    /// Without HOME (cron, `env -i`) a build, which runs in rbuild's user namespace as uid 0,
    /// uses this user's default state dir, as `images` outside it does (not root's home).
    @Test func noHomeUsesTheUsersStateDir() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": "FROM scratch\nCOPY f /f\n", "f": "x\n"])
        var env = ProcessInfo.processInfo.environment
        for k in ["HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"] { env[k] = nil }
        let tag = "rbuild-test-nohome-\(getpid())"
        let built = try rbuild(["build", "-q", "-t", tag, ctx], environment: env)
        defer { _ = try? rbuild(["rmi", tag], environment: env) }
        #expect(built.status == 0, "\(built.stderr)")
        let images = try rbuild(["images"], environment: env)
        #expect(images.stdout.contains(tag), "\(images.stdout)\(images.stderr)")
    }

    /// Four rbuild processes building at once on one state dir all succeed; a build killed with
    /// SIGKILL in the middle of a RUN leaves a state dir the next build uses.
    @Test func concurrentBuildsAndKill9() throws {
        let b = try BuildFixture()
        var procs: [Process] = []
        for i in 0..<4 {
            let ctx = try b.context(["f": "\(i % 2)\n", "Dockerfile": "FROM busybox\nRUN echo shared > /shared\nCOPY f /f\nRUN cat /f > /g\n"],
                                    name: "c\(i)")
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Env.binary)
            p.arguments = ["build"] + b.root + ["-q", "-t", "conc:\(i)", ctx]
            p.standardOutput = FileHandle.nullDevice
            let err = b.fs.dir + "/err\(i)"
            FileManager.default.createFile(atPath: err, contents: nil)
            p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
            try p.run()
            procs.append(p)
        }
        for (i, p) in procs.enumerated() {
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "build \(i): \((try? b.file(b.fs.dir + "/err\(i)")) ?? "")")
        }
        for i in 0..<4 { #expect(try b.sh("conc:\(i)", "cat /shared /g") == "shared\n\(i % 2)\n") }

        // A sleep no other test runs: tests run in parallel as the same user.
        let ctx = try b.context(["Dockerfile": "FROM busybox\nRUN echo before > /b\nRUN sleep 2937\n"], name: "k")
        try b.killBuild(ctx, once: "RUN sleep 2937")
        // The sandbox dies with it (under load, a moment after rbuild does).
        var ps = ""
        let gone = waitFor(seconds: 15) {
            ps = (try? runProcess("/bin/ps", ["-u", String(getuid()), "-o", "args="]).stdout) ?? "ps failed"
            return !ps.contains("sleep 2937")
        }
        #expect(gone, "\(ps)")
        try "FROM busybox\nRUN echo before > /b\nRUN echo after > /a\n".write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
        let again = try b.build(["-t", "k:1"], ctx)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(cachedSteps(again.stderr) == ["[2/3] RUN echo before > /b"])
        #expect(try b.sh("k:1", "cat /b /a") == "before\nafter\n")
        #expect(try rbuild(["images"] + b.root).status == 0)
    }
}

/// Issue 7: several platforms in one build, each RUN step of a foreign platform emulated by qemu
/// registered in the sandbox's own binfmt_misc.
@Suite("multi-platform builds, as an unprivileged user", .enabled(if: Env.enabled))
struct MultiPlatformBuildTests {
    /// busybox for amd64 and arm64 under one name (an index).
    func fixture() throws -> BuildFixture {
        let b = try BuildFixture()
        let arm = try Rootfs(arch: "arm64")
        let r = try rbuild(["import"] + b.root + ["--platform", "linux/arm64", arm.path, "busybox:latest"])
        #expect(r.status == 0, "\(r.stderr)")
        return b
    }

    /// --annotation at each level of a two-platform OCI archive (no RUN: nothing to emulate).
    @Test func annotations() throws {
        let b = try fixture()
        let ctx = try b.context(["Dockerfile": "FROM busybox\nLABEL a=b\n"])
        let out = b.fs.dir + "/annotated.tar"
        let r = try b.build(["--platform", "linux/amd64,linux/arm64", "-o", "type=oci,dest=\(out),name=ann:1",
                             "--annotation", "org.opencontainers.image.title=demo",
                             "--annotation", "manifest[linux/arm64]:arm.only=yes",
                             "--annotation", "index:org.opencontainers.image.description=both",
                             "--annotation", "manifest-descriptor:in.index=entry",
                             "--annotation", "index-descriptor:in.layout=top"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        let raw = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "oci-archive:\(out)"])
        let index = try JSONSerialization.jsonObject(with: Data(raw.stdout.utf8)) as? [String: Any]
        #expect((index?["annotations"] as? [String: String]) == ["org.opencontainers.image.description": "both"], "\(raw.stdout)\(raw.stderr)")
        let entries = index?["manifests"] as? [[String: Any]] ?? []
        #expect(entries.count == 2 && entries.allSatisfy { ($0["annotations"] as? [String: String])?["in.index"] == "entry" }, "\(raw.stdout)")
        // Each platform's manifest, read from the archive by the digest the index gives.
        for entry in entries {
            let arch = (entry["platform"] as? [String: Any])?["architecture"] as? String
            let hex = (entry["digest"] as? String ?? "").replacingOccurrences(of: "sha256:", with: "")
            let m = try runProcess("/bin/tar", ["xOf", out, "blobs/sha256/" + hex])
            let manifest = try? JSONSerialization.jsonObject(with: Data(m.stdout.utf8)) as? [String: Any]
            let got = manifest?["annotations"] as? [String: String]
            #expect(got?["org.opencontainers.image.title"] == "demo" && (got?["arm.only"] == "yes") == (arch == "arm64"),
                    "\(arch ?? "?"): \(m.stdout)\(m.stderr)")
        }
        let top = try runProcess("/bin/tar", ["xOf", out, "index.json"])
        #expect(top.stdout.contains("\"in.layout\":\"top\"") && top.stdout.contains("org.opencontainers.image.ref.name"), "\(top.stdout)")
        let bad = try b.build(["--annotation", "nonsense:k=v"], ctx)
        #expect(bad.status != 0 && bad.stderr.contains("unknown type nonsense"), "\(bad.stderr)")
    }

    @Test func twoPlatformsOneIndex() throws {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/sys/fs/binfmt_misc")) ?? []
        #expect(!entries.contains { $0.contains("aarch64") }, "the host must have no aarch64 handler: \(entries)")
        let b = try fixture()
        let ctx = try b.context(["Dockerfile": """
            FROM busybox
            ARG TARGETPLATFORM
            ARG BUILDPLATFORM
            RUN uname -m > /arch && echo "$BUILDPLATFORM -> $TARGETPLATFORM" > /platforms
            RUN echo hi > /tmp/f && cat /tmp/f > /applets
            """])
        let out = b.fs.dir + "/multi.tar", local = b.fs.dir + "/local"
        let r = try b.build(["--platform", "linux/amd64,linux/arm64", "-t", "m:1", "-o", "type=oci,dest=\(out)",
                             "-o", "type=local,dest=\(local)", "-o", "type=image"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("[linux/arm64 4/5] RUN uname -m"), "steps name their platform")
        #expect(try b.file(local + "/linux_amd64/arch") == "x86_64\n")
        #expect(try b.file(local + "/linux_arm64/arch") == "aarch64\n")
        #expect(try b.file(local + "/linux_arm64/platforms") == "linux/amd64 -> linux/arm64\n")
        #expect(try b.file(local + "/linux_arm64/applets") == "hi\n")
        // One OCI index, a manifest per platform, as skopeo reads it.
        let raw = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "oci-archive:" + out])
        #expect(raw.status == 0, "\(raw.stderr)")
        let index = try JSONSerialization.jsonObject(with: Data(raw.stdout.utf8)) as! [String: Any]
        #expect(index["mediaType"] as? String == "application/vnd.oci.image.index.v1+json")
        let platforms = (index["manifests"] as! [[String: Any]]).compactMap { ($0["platform"] as? [String: Any])?["architecture"] as? String }
        #expect(platforms == ["amd64", "arm64"])
        for (arch, uname) in [("arm64", "aarch64\n"), ("amd64", "x86_64\n")] {
            let run = try rbuild(["run"] + b.root + ["--platform", "linux/\(arch)", "m:1", "--", "uname", "-m"])
            #expect(run.stdout == uname, "\(run.stderr)")
        }
        let docker = try b.build(["--platform", "linux/amd64,linux/arm64", "-o", "type=docker,dest=\(b.fs.dir)/d.tar"], ctx)
        #expect(docker.status != 0)
        #expect(docker.stderr.contains("does not currently support exporting manifest lists"))
    }

    /// FROM --platform=$BUILDPLATFORM: the build stage runs natively for every target; a step
    /// that does not depend on the target runs once; three platforms, the third from scratch.
    @Test func crossCompilationPattern() throws {
        let b = try fixture()
        let ctx = try b.context(["Dockerfile": """
            FROM --platform=$BUILDPLATFORM busybox AS build
            RUN uname -m > /build-arch
            ARG TARGETARCH
            RUN echo "built on $(cat /build-arch) for $TARGETARCH" > /out
            FROM scratch
            COPY --from=build /out /out
            """])
        let local = b.fs.dir + "/local"
        let r = try b.build(["--platform", "linux/amd64,linux/arm64,linux/riscv64", "-o", "type=local,dest=\(local)"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        for arch in ["amd64", "arm64", "riscv64"] {
            #expect(try b.file(local + "/linux_\(arch)/out") == "built on x86_64 for \(arch)\n")
        }
        // The target-independent step is one vertex of the graph the three platforms share: it
        // shows (and runs) once.
        let runs = r.stderr.split(separator: "\n").filter { $0.contains("] RUN uname -m > /build-arch") }.count
        let cached = cachedSteps(r.stderr).filter { $0.contains("RUN uname -m > /build-arch") }.count
        #expect(runs == 1 && cached == 0, "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").filter { $0.contains("] RUN echo \"built on") }.count == 3, "\(r.stderr)")
    }

    /// No qemu: the build fails before any step runs, naming the platform and the package.
    @Test func missingQemu() throws {
        let b = try fixture()
        let ctx = try b.context(["Dockerfile": "FROM busybox\nRUN touch /ran\n"])
        var env = ProcessInfo.processInfo.environment
        env["RBUILD_QEMU_DIR"] = b.fs.dir + "/no-qemu-here"
        let r = try b.build(["--platform", "linux/amd64,linux/arm64"], ctx, environment: env)
        #expect(r.status == 1)
        #expect(r.stderr.contains("platform linux/arm64"), "\(r.stderr)")
        #expect(r.stderr.contains("apt install qemu-user-static"))
        #expect(!r.stderr.contains("RUN touch"), "nothing ran")
    }
}

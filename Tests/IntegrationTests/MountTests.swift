import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// RUN --mount (issue 15): each mount type's semantics, as an unprivileged user, on the images
/// and contexts the world writes.
@Suite("RUN --mount, as an unprivileged user", .enabled(if: Env.enabled))
struct MountTests {
    /// The layers of the image in an OCI archive, as skopeo reads them.
    func layers(_ archive: String) throws -> [String] {
        let r = try runProcess("/usr/bin/skopeo", ["inspect", "oci-archive:" + archive])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        return json?["Layers"] as? [String] ?? []
    }

    /// Binds from the context (read-only; rw writes thrown away; .dockerignore honoured; a
    /// file; relative targets), from a stage (a directory, a file, rw) and from an image;
    /// tmpfs; on every snapshotter. Mount points the steps made are not in any layer: the steps
    /// that change nothing else write none.
    @Test(arguments: ["overlay", "fuse-overlayfs", "copy"])
    func bindsAndTmpfs(snapshotter: String) throws {
        let b = try BuildFixture()
        let ctx = try b.context([
            "a.txt": "hello\n", "sub/s.txt": "s\n", "secret.key": "never\n", ".dockerignore": "*.key\n",
            "Dockerfile": """
                FROM busybox AS tools
                RUN mkdir -p /data/deep && echo from-stage > /data/f && ln -s f /data/link && echo tool > /tool

                FROM busybox
                WORKDIR /work
                RUN --mount=type=bind,target=/ctx cat /ctx/a.txt && test ! -e /ctx/secret.key && ! touch /ctx/x 2>/dev/null && echo ro
                RUN --mount=type=bind,target=/ctx,rw echo changed > /ctx/a.txt && cat /ctx/a.txt
                RUN --mount=type=bind,source=a.txt,target=/one.txt cat /one.txt
                RUN --mount=type=bind,source=sub,target=rel cat /work/rel/s.txt
                RUN --mount=type=bind,from=tools,source=/data,target=/d cat /d/f /d/link && ! touch /d/x 2>/dev/null && echo ro
                RUN --mount=type=bind,from=tools,source=/tool,target=/usr/local/bin/tool,rw cat /usr/local/bin/tool && echo x > /usr/local/bin/tool
                RUN --mount=type=bind,from=busybox,source=/bin/busybox,target=/opt/busybox /opt/busybox echo image
                RUN --mount=type=tmpfs,target=/t,size=1m touch /t/x && df -k /t | tail -1 | awk '{print $2}'
                RUN echo kept > /kept
                """])
        let out = b.fs.dir + "/out.tar"
        let r = try b.build(["--snapshotter", snapshotter, "-t", "m:1", "-o", "type=oci,dest=\(out)", "-o", "type=image"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        let output = r.stderr
        #expect(output.contains(" ro\n"), "\(output)")
        #expect(output.contains(" changed\n") && output.contains(" from-stage\n") && output.contains(" tool\n"))
        #expect(output.contains(" image\n") && output.contains(" 1024\n"), "a 1 MiB tmpfs: \(output)")
        // The context and the stage are as they were; the image has none of the mount points.
        #expect(try b.file(ctx + "/a.txt") == "hello\n")
        #expect(try b.sh("m:1", "cat /kept; ls /; ls -A /work | wc -l; test -e /usr/local/bin/tool || echo no-tool") == """
            kept
            bin
            dev
            etc
            home
            kept
            proc
            root
            sbin
            sys
            tmp
            usr
            var
            work
            0
            no-tool

            """)
        // The base's layer, WORKDIR's and `echo kept`'s: the mounting steps wrote none.
        #expect(try layers(out).count == 3, "\(r.stderr)")
    }

    /// A cache mount keeps its files across builds (and processes), is never in the image, is
    /// found by id, and can be seeded from a stage; prune and du see it.
    @Test func cachePersistsAndIsNotInTheImage() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": """
            FROM busybox AS seed
            RUN mkdir /s && echo seeded > /s/f

            FROM busybox
            RUN --mount=type=cache,target=/cache echo run >> /cache/log && wc -l < /cache/log > /runs
            RUN --mount=type=cache,id=shared-id,target=/a echo a > /a/x
            RUN --mount=type=cache,id=shared-id,target=/b,ro cat /b/x > /b-saw && ! touch /b/y 2>/dev/null
            RUN --mount=type=cache,id=seeded,from=seed,source=/s,target=/c cat /c/f > /c-saw
            RUN --mount=type=cache,id=../../../escape,target=/e echo confined > /e/f
            """])
        for expected in ["1", "2"] {
            let r = try b.build(["--no-cache", "-t", "c:1"], ctx)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try b.sh("c:1", "cat /runs /b-saw /c-saw; ls -d /cache /a /b /c /e 2>/dev/null | wc -l") == "\(expected)\na\nseeded\n0\n")
        }
        // Confined: the id names a directory by its digest under the state dir's cache-mounts.
        #expect(!FileManager.default.fileExists(atPath: b.fs.dir + "/escape"))
        #expect(!FileManager.default.fileExists(atPath: b.state + "/escape"))
        let du = try rbuild(["du"] + b.root)
        #expect(du.status == 0, "\(du.stderr)")
        for id in ["/cache", "shared-id", "seeded", "../../../escape"] {
            #expect(du.stdout.contains("exec.cachemount  " + id + " "), "\(du.stdout)")
        }
        let prune = try rbuild(["prune", "--filter", "type=exec.cachemount"] + b.root)
        #expect(prune.status == 0 && prune.stdout.contains("Deleted 4 cache mounts"), "\(prune.stdout)\(prune.stderr)")
        #expect(!(try rbuild(["du"] + b.root)).stdout.contains("exec.cachemount"))
        let again = try b.build(["--no-cache", "-t", "c:2"], ctx)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try b.sh("c:2", "cat /runs") == "1\n", "an empty cache after prune")
    }

    /// A cache is made owned by uid/gid when given, else by the step's USER (moby/buildkit#1237),
    /// with its mode; those ids need a subordinate range.
    @Test(.enabled(if: Env.hasRange)) func cacheOwners() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": """
            FROM busybox
            RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' >> /etc/group && \
                mkdir -p /home/app && chown 1000:1000 /home/app
            USER app
            RUN --mount=type=cache,target=/home/app/.cache touch /home/app/.cache/ok && stat -c '%u:%g %a' /home/app/.cache > /tmp/owner
            RUN --mount=type=cache,target=/opt/c,uid=2000,gid=3000,mode=0750 stat -c '%u:%g %a' /opt/c >> /tmp/owner
            """])
        let r = try b.build(["-t", "o:1"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.sh("o:1", "cat /tmp/owner") == "1000:1000 755\n2000:3000 750\n")
    }

    /// sharing=locked: two builds in two processes on one state dir never use the cache at
    /// once; sharing=private: they get a directory each; shared: the same one.
    @Test func lockedAndPrivateSharing() throws {
        let b = try BuildFixture()
        func start(_ name: String, _ dockerfile: String) throws -> (Process, String) {
            let ctx = try b.context(["Dockerfile": dockerfile], name: name)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Env.binary)
            p.arguments = ["build"] + b.root + ["--no-cache", "--progress", "plain", ctx]
            let log = b.fs.dir + "/\(name).log"
            FileManager.default.createFile(atPath: log, contents: nil)
            p.standardOutput = FileHandle.nullDevice
            p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            try p.run()
            return (p, log)
        }
        // Each step fails if another holds the cache: mkdir is the witness.
        let locked = "FROM busybox\nRUN --mount=type=cache,id=l,target=/c,sharing=locked mkdir /c/busy && sleep 1 && rmdir /c/busy\n"
        let runs = try (0..<2).map { try start("locked\($0)", locked + "RUN echo \($0)\n") }
        for (p, log) in runs {
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\((try? b.file(log)) ?? "")")
        }
        let priv = "FROM busybox\nRUN --mount=type=cache,id=p,target=/c,sharing=private mkdir /c/busy && sleep 1 && rmdir /c/busy && echo"
        let privRuns = try (0..<2).map { try start("private\($0)", priv + " \($0)\n") }
        for (p, log) in privRuns {
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\((try? b.file(log)) ?? "")")
        }
        // Shared: the two steps meet in the one directory, each waiting for the other's mark
        // (a directory each, or one step after the other, and both wait 60 s in vain and fail).
        let sharedRuns = try (0..<2).map {
            try start("shared\($0)", "FROM busybox\nRUN --mount=type=cache,id=s,target=/c touch /c/\($0); i=0; "
                      + "while [ ! -e /c/\(1 - $0) ]; do i=$((i+1)); [ $i -le 600 ] || exit 9; sleep 0.1; done\n")
        }
        for (p, log) in sharedRuns {
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "a shared cache is one directory, used by both steps at once: \((try? b.file(log)) ?? "")")
        }
    }

    /// Secrets from a file and from the environment: in the step (file and variable), with their
    /// owner and mode, and nowhere else — not in a blob, the state dir or the log. A required
    /// secret not given fails the build with a message saying how to give it.
    @Test func secrets() throws {
        let b = try BuildFixture()
        let value = "s3cr3t-\(UInt32.random(in: 0...UInt32.max))"
        let envValue = "env-\(UInt32.random(in: 0...UInt32.max))"
        let file = b.fs.dir + "/token"
        try value.write(toFile: file, atomically: false, encoding: .utf8)
        // The Dockerfile holds the values' digests only: it is in the log and the cache index.
        func sha256(_ text: String) throws -> String {
            String(try runProcess("/bin/sh", ["-c", "printf %s \"$0\" | sha256sum", text]).stdout.prefix(64))
        }
        let ctx = try b.context(["Dockerfile": """
            FROM busybox
            RUN --mount=type=secret,id=tok stat -c '%a %u:%g %s' /run/secrets/tok && sha256sum /run/secrets/tok | grep -q \(try sha256(value)) && echo file-ok
            RUN --mount=type=secret,id=tok,target=/etc/app/key,mode=0440,uid=0,gid=0 stat -c '%a %s' /etc/app/key
            RUN --mount=type=secret,id=envtok,env=TOKEN printf %s "$TOKEN" | sha256sum | grep -q \(try sha256(envValue)) && test ! -e /run/secrets/envtok && echo env-ok
            RUN --mount=type=secret,id=absent echo not-required
            RUN echo done > /done
            """])
        var env = ProcessInfo.processInfo.environment
        env["MY_TOKEN"] = envValue
        let out = b.fs.dir + "/out.tar"
        let r = try b.build(["--secret", "id=tok,src=\(file)", "--secret", "id=envtok,env=MY_TOKEN", "-t", "s:1",
                             "-o", "type=oci,dest=\(out)"], ctx, environment: env)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains(" 400 0:0 \(value.utf8.count)\n") && r.stderr.contains(" file-ok\n"), "\(r.stderr)")
        #expect(r.stderr.contains(" 440 \(value.utf8.count)\n") && r.stderr.contains(" env-ok\n") && r.stderr.contains(" not-required\n"))
        #expect(!r.stderr.contains(value) && !r.stderr.contains(envValue), "the log never shows a secret's value")
        #expect(try layers(out).count == 2, "only `echo done` wrote a layer")
        // Every file of the state dir (the store's blobs are uncompressed layers) and the archive.
        var unreadable: [String] = []
        func scan(_ dir: String) throws {
            let e = FileManager.default.enumerator(atPath: dir)
            while let rel = e?.nextObject() as? String {
                var st = stat()
                guard lstat(dir + "/" + rel, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
                guard let data = FileManager.default.contents(atPath: dir + "/" + rel) else {
                    unreadable.append(rel)
                    continue
                }
                #expect(data.range(of: Data(value.utf8)) == nil && data.range(of: Data(envValue.utf8)) == nil, "\(dir)/\(rel)")
            }
        }
        try scan(b.state)
        let unpacked = b.fs.dir + "/unpacked"
        try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
        #expect(try runProcess("/bin/tar", ["-xf", out, "-C", unpacked]).status == 0)
        for blob in try FileManager.default.contentsOfDirectory(atPath: unpacked + "/blobs/sha256") {
            let zcat = try runProcess("/bin/sh", ["-c", "zcat -f '\(unpacked)/blobs/sha256/\(blob)' | grep -c -a -e '\(value)' -e '\(envValue)' || true"])
            #expect(zcat.stdout.trimmed == "0", "blob \(blob)")
        }
        #expect(unreadable.isEmpty, "\(unreadable)")
        // Required and missing.
        let req = try b.context(["Dockerfile": "FROM busybox\nRUN --mount=type=secret,id=npmrc,required true\n"], name: "req")
        let missing = try b.build([], req)
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("secret npmrc is required but was not given: pass --secret id=npmrc,src=FILE"), "\(missing.stderr)")
        let bad = try b.build(["--secret", "id=npmrc,src=/nonexistent/file"], req)
        #expect(bad.status == 1 && bad.stderr.contains("/nonexistent/file"), "\(bad.stderr)")
    }

    /// An ssh agent reaches the step through a socket of its own, with SSH_AUTH_SOCK set, its
    /// owner and mode as asked; `--ssh default` is $SSH_AUTH_SOCK; a missing required agent fails.
    @Test func sshAgentSocket() throws {
        let b = try BuildFixture()
        let agentDir = b.fs.dir + "/agent"
        try FileManager.default.createDirectory(atPath: agentDir, withIntermediateDirectories: true)
        let sock = agentDir + "/sock"
        // A stand-in agent: answers every connection with a fixed line (busybox has no ssh-add;
        // the Debian tests use OpenSSH's real agent and ssh-add).
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        agent.arguments = ["-c", """
            import socket, os
            s = socket.socket(socket.AF_UNIX); s.bind('\(sock)'); s.listen(4)
            while True:
                c, _ = s.accept(); c.recv(64); c.sendall(b'agent-answer\\n'); c.close()
            """]
        agent.standardOutput = FileHandle.nullDevice
        agent.standardError = FileHandle.nullDevice
        try agent.run()
        defer { kill(agent.processIdentifier, SIGKILL) }
        var st = stat()
        try #require(waitFor(seconds: 30) { stat(sock, &st) == 0 }, "ssh-agent's socket did not appear")
        let ctx = try b.context(["Dockerfile": """
            FROM busybox
            RUN --mount=type=ssh stat -c '%F %a %u' "$SSH_AUTH_SOCK" && echo "$SSH_AUTH_SOCK"
            RUN --mount=type=ssh,id=other,target=/agent.sock,mode=0666 stat -c '%a' /agent.sock
            """])
        var env = ProcessInfo.processInfo.environment
        env["SSH_AUTH_SOCK"] = sock
        let r = try b.build(["--ssh", "default", "--ssh", "other=\(sock)"], ctx, environment: env)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains(" socket 600 0\n") && r.stderr.contains(" /run/buildkit/ssh_agent.0\n"), "\(r.stderr)")
        #expect(r.stderr.contains(" 666\n"))
        let req = try b.context(["Dockerfile": "FROM busybox\nRUN --mount=type=ssh,required true\n"], name: "req")
        let missing = try b.build([], req)
        #expect(missing.status == 1 && missing.stderr.contains("ssh agent default is required but was not given: pass --ssh default"),
                "\(missing.stderr)")
    }

    /// Escape attempts are refused or confined: a bind source with `..` stays in the context, one
    /// through a symlink out of the context resolves inside it (and is not found), a target
    /// through a symlink in the image lands inside the root.
    @Test func escapesAreConfined() throws {
        let b = try BuildFixture()
        let outside = b.fs.dir + "/outside"
        try "host file\n".write(toFile: outside, atomically: false, encoding: .utf8)
        let ctx = try b.context(["in.txt": "inside\n", "up": "->../outside", "Dockerfile": """
            FROM busybox
            RUN --mount=type=bind,source=../../in.txt,target=/x cat /x
            """])
        let dotdot = try b.build([], ctx)
        #expect(dotdot.status == 0 && dotdot.stderr.contains(" inside\n"), "`..` stops at the context's root: \(dotdot.stderr)")
        try "FROM busybox\nRUN --mount=type=bind,source=up,target=/x cat /x\n".write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
        let link = try b.build([], ctx)
        #expect(link.status == 1 && !link.stderr.contains("host file"), "\(link.stderr)")
        #expect(link.stderr.contains("not found"), "\(link.stderr)")
        let hostTarget = b.fs.dir + "/planted"
        try """
            FROM busybox
            RUN ln -s \(b.fs.dir) /evil
            RUN --mount=type=tmpfs,target=/evil/planted touch /evil/planted/x && echo in-root
            RUN --mount=type=secret,id=s,target=/evil/secret-planted,required=false true
            """.write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
        let target = try b.build(["--secret", "id=s,env=HOME"], ctx)
        #expect(target.status == 0 && target.stderr.contains(" in-root\n"), "\(target.stderr)")
        #expect(!FileManager.default.fileExists(atPath: hostTarget))
        #expect(!FileManager.default.fileExists(atPath: b.fs.dir + "/secret-planted"))
    }
}

import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Builds spread over native nodes (`rbuild builder`, `build --builder`): Debian's sshd, started by
// these tests as root on 127.0.0.1 and a free port with its own host key and key-only login,
// stands for a remote machine; the unprivileged user rbuild-nosub (no subordinate range) is the
// node, with a state dir of its own, and rbuild-sub (with a range) builds. rbuild runs only as
// those two users; root only starts sshd and the registry. scripts/test runs this suite as root
// with RBUILD_NODE_TESTS=1.

enum NodeEnv {
    static let enabled = Env.enabled && Env.vars["RBUILD_NODE_TESTS"] == "1" && getuid() == 0
    static let local = "rbuild-sub", remote = "rbuild-nosub"
}

/// sshd and the staged rbuild, once for the process; stopped at exit.
final class NodeFixture: @unchecked Sendable {
    let dir: String
    var port = 0
    var binary: String { dir + "/rbuild" }
    var sshCommand: String { "ssh -F \(dir)/client/config" }

    static let shared: Swift.Result<NodeFixture, FixtureError> = FixtureError.capture {
        let f = try NodeFixture()
        atexit { if case .success(let f) = NodeFixture.shared { f.remove() } }
        return f
    }

    static func get() throws -> NodeFixture { try shared.get() }

    init() throws {
        var template = Array("/tmp/rbuild-nodes-XXXXXX".utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { throw POSIXError(.EIO) }
        dir = String(cString: p)
        chmod(dir, 0o755)
        func sh(_ script: String) throws {
            let r = try runProcess("/bin/sh", ["-ec", script])
            guard r.status == 0 else { throw FixtureError(message: "node fixture: \(script): \(r.stderr)") }
        }
        guard let sshdPath = firstExecutable(["/usr/sbin/sshd"]) else {
            throw FixtureError(message: "sshd is not installed (apt install openssh-server; scripts/setup does)")
        }
        // The node user logs in with a key only; the host key is checked (known_hosts).
        try sh("""
            cp '\(Env.binary)' '\(dir)/rbuild' && chmod 755 '\(dir)/rbuild'
            mkdir -p /run/sshd '\(dir)/keys' '\(dir)/client' && chmod 755 '\(dir)/keys'
            ssh-keygen -q -t ed25519 -N '' -f '\(dir)/hostkey'
            ssh-keygen -q -t ed25519 -N '' -f '\(dir)/client/id'
            cp '\(dir)/client/id.pub' '\(dir)/keys/\(NodeEnv.remote)' && chmod 644 '\(dir)/keys/\(NodeEnv.remote)'
            chmod 600 '\(dir)/hostkey'
            """)
        for _ in 0..<5 {
            port = Int.random(in: 20000..<32000)
            let config = """
                ListenAddress 127.0.0.1
                Port \(port)
                HostKey \(dir)/hostkey
                AuthorizedKeysFile \(dir)/keys/%u
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                UsePAM yes
                StrictModes no
                AllowUsers \(NodeEnv.remote)
                PidFile \(dir)/sshd.pid

                """
            try config.write(toFile: dir + "/sshd_config", atomically: false, encoding: .utf8)
            // As a daemon (sshd closes every fd it inherits, which Foundation's Process takes
            // for an exit); stopped by its pid file.
            let start = try runProcess(sshdPath, ["-f", dir + "/sshd_config", "-E", dir + "/sshd.log"])
            guard start.status == 0 else { continue }
            let up = waitFor(seconds: 5) {
                (try? runProcess("/usr/bin/ssh-keyscan", ["-p", String(port), "-t", "ed25519", "127.0.0.1"]))?.status == 0
            }
            guard up else { stop(); continue }
            try sh("""
                echo "[127.0.0.1]:\(port) $(cut -d' ' -f1,2 '\(dir)/hostkey.pub')" > '\(dir)/client/known_hosts'
                printf 'Host *\\n  IdentityFile %s\\n  UserKnownHostsFile %s\\n  StrictHostKeyChecking yes\\n  BatchMode yes\\n' \
                  '\(dir)/client/id' '\(dir)/client/known_hosts' > '\(dir)/client/config'
                chown -R \(NodeEnv.local): '\(dir)/client' && chmod 700 '\(dir)/client' && chmod 600 '\(dir)/client/id'
                """)
            return
        }
        throw FixtureError(message: "sshd did not start: " + ((try? String(contentsOfFile: dir + "/sshd.log", encoding: .utf8)) ?? ""))
    }

    func stop() {
        if let text = try? String(contentsOfFile: dir + "/sshd.pid", encoding: .utf8), let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
            kill(pid, SIGTERM)
            unlink(dir + "/sshd.pid")
        }
    }

    func remove() {
        stop()
        _ = try? runProcess("/bin/rm", ["-rf", dir])
    }

    var endpoint: String { "ssh://\(NodeEnv.remote)@127.0.0.1:\(port)" }

    /// The environment `user` runs rbuild with (its own home, a builders directory per test).
    func environment(_ user: String, config: String) -> [String: String] {
        let home = (try? runProcess("/usr/bin/getent", ["passwd", user]))?.stdout.split(separator: ":", omittingEmptySubsequences: false).dropFirst(5).first.map(String.init) ?? "/"
        return ["HOME": home, "USER": user, "PATH": "/usr/local/bin:/usr/bin:/bin", "TMPDIR": "/tmp",
                "XDG_CONFIG_HOME": config, "RBUILD_SSH_COMMAND": sshCommand]
    }

    /// `args` as `user`, with no capabilities (setpriv).
    func run(_ user: String, _ args: [String], config: String, timeout: Double = 300) throws -> Result {
        try runProcess("/usr/bin/setpriv", ["--reuid=\(user)", "--regid=\(user)", "--init-groups", "/usr/bin/env", "-i"]
                       + environment(user, config: config).map { "\($0.key)=\($0.value)" } + args, timeout: timeout)
    }
}

/// One test's directories: the local user's work dir and state, the node user's state (with
/// busybox imported on each side for the platform it builds).
struct NodeWork {
    let f: NodeFixture
    let dir: String
    var local: String { dir + "/local" }
    var node: String { dir + "/node" }
    var config: String { local + "/config" }

    init(_ name: String) throws {
        f = try NodeFixture.get()
        dir = f.dir + "/" + name
        let r = try runProcess("/bin/sh", ["-ec", """
            mkdir -p '\(dir)/local' '\(dir)/node' && chmod 755 '\(dir)'
            chown \(NodeEnv.local): '\(dir)/local' && chown \(NodeEnv.remote): '\(dir)/node'
            """])
        guard r.status == 0 else { throw FixtureError(message: r.stderr) }
        try check(local([f.binary, "import", "--root", local + "/state", Env.fixtures + "/rootfs-amd64", "busybox:latest", "--platform", "linux/amd64"]))
        try check(f.run(NodeEnv.remote, [f.binary, "import", "--root", node + "/state", Env.fixtures + "/rootfs-arm64", "busybox:latest",
                                          "--platform", "linux/arm64"], config: node + "/config"))
    }

    func check(_ r: Result) throws {
        guard r.status == 0 else { throw FixtureError(message: "setup failed: \(r.stderr)") }
    }

    func local(_ args: [String], timeout: Double = 300) throws -> Result { try f.run(NodeEnv.local, args, config: config, timeout: timeout) }

    func rbuild(_ args: [String]) throws -> Result { try local([f.binary] + args) }

    /// A builder NAME whose one node builds linux/arm64 at `endpoint`, with the node user's state dir.
    func createBuilder(_ name: String = "multi", endpoint: String? = nil) throws {
        let r = try rbuild(["builder", "create", name, "--node", endpoint ?? f.endpoint, "--platform", "linux/arm64",
                            "--driver-opt", "rbuild=\(f.binary),root=\(node)/state"])
        #expect(r.status == 0, "\(r.stderr)")
    }

    /// A context directory owned by the local user.
    func context(_ files: [String: String]) throws -> String {
        let ctx = local + "/ctx-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: ctx, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(toFile: ctx + "/" + name, atomically: false, encoding: .utf8) }
        _ = try runProcess("/bin/chown", ["-R", "\(NodeEnv.local):", ctx])
        return ctx
    }

    /// The file `path` of the top layer of the `arch` image in an OCI archive.
    func fileInArchive(_ archive: String, arch: String, _ path: String) throws -> String {
        try runProcess("/bin/sh", ["-ec", """
            d=$(mktemp -d); trap 'rm -rf "$d"' EXIT; cd "$d"; tar xf '\(archive)'
            top=$(jq -r '.manifests[0].digest' index.json | cut -d: -f2)
            if jq -e '.manifests' blobs/sha256/$top >/dev/null 2>&1; then
              m=$(jq -r '.manifests[] | select(.platform.architecture=="\(arch)") | .digest' blobs/sha256/$top | cut -d: -f2)
            else m=$top; fi
            l=$(jq -r '.layers[-1].digest' blobs/sha256/$m | cut -d: -f2)
            tar xzf blobs/sha256/$l -O '\(path)'
            """]).stdout
    }
}

@Suite("native nodes over ssh (sshd on 127.0.0.1, the node is another unprivileged user)", .enabled(if: NodeEnv.enabled), .serialized)
struct NodeTests {
    /// arm64 declared for the node (it runs it there under emulation), amd64 kept here: one OCI
    /// index of both, read by skopeo; a file .dockerignore excludes never travels.
    @Test func twoPlatformsSplitOverANode() throws {
        let w = try NodeWork("split")
        try w.createBuilder()
        let big = String(repeating: "x", count: 2 << 20)
        let ctx = try w.context(["Dockerfile": "FROM busybox\nCOPY . /ctx\nRUN uname -m > /arch\n", "f": "hello\n",
                                 "big.bin": big, ".dockerignore": "big.bin\n"])
        let out = w.local + "/out.tar"
        let r = try w.rbuild(["build", "--builder", "multi", "--root", w.local + "/state", "--progress", "plain",
                              "--platform", "linux/amd64,linux/arm64", "-o", "type=oci,dest=\(out)", ctx])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("[multi0] [3/3] RUN uname -m"), "\(r.stderr)")
        // What was sent: the Dockerfile, f and .dockerignore — not the 2 MiB file.
        let sent = r.stderr.split(separator: "\n").first { $0.contains("files,") && $0.contains("bytes to ssh://") }
        let words = sent.map { $0.split(separator: " ") } ?? []
        let bytes = words.firstIndex(of: "bytes").flatMap { $0 > 0 ? Int(words[$0 - 1]) : nil }
        #expect(bytes != nil && bytes! < 1000, "\(sent ?? "no line saying what was sent")")
        let raw = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "oci-archive:" + out])
        #expect(raw.status == 0, "\(raw.stderr)")
        let archs = try skopeoArchitectures(raw.stdout)
        #expect(archs == ["amd64", "arm64"], "\(raw.stdout)")
        #expect(try w.fileInArchive(out, arch: "arm64", "arch") == "aarch64\n")
        #expect(try w.fileInArchive(out, arch: "amd64", "arch") == "x86_64\n")
        // The node's copy of the context (`COPY . /ctx`) never had big.bin.
        let listing = try runProcess("/bin/sh", ["-ec", "d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; cd \"$d\"; tar xf '\(out)'; for b in blobs/sha256/*; do tar tzf $b 2>/dev/null || true; done | sort -u"]).stdout
        #expect(listing.contains("ctx/f") && !listing.contains("big.bin"), "\(listing)")
    }

    /// type=registry: the node pushes its platform's blobs and manifest itself (they never come
    /// here), this machine pushes its own and the index last. A secret reaches the node's RUN
    /// step and is written nowhere in the node's state dir.
    @Test func registryOutputIsPushedFromTheNode() throws {
        let w = try NodeWork("push")
        try w.createBuilder()
        let registry = try LocalRegistry(in: w.dir + "/registry")
        let token = "tok-\(UUID().uuidString)"
        try token.write(toFile: w.local + "/token", atomically: false, encoding: .utf8)
        _ = try runProcess("/bin/chown", ["\(NodeEnv.local):", w.local + "/token"])
        let ctx = try w.context(["Dockerfile": "FROM busybox\nRUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -c1-64 > /tok && uname -m > /arch\n"])
        let ref = "\(registry.host)/nodes/app:1"
        let r = try w.rbuild(["build", "--builder", "multi", "--root", w.local + "/state", "--progress", "plain", "--platform", "linux/amd64,linux/arm64",
                              "--secret", "id=tok,src=\(w.local)/token", "-t", ref, "--push", ctx])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("[multi0] pushing linux/arm64 to \(registry.host)/nodes/app"), "\(r.stderr)")
        let raw = try runProcess("/usr/bin/skopeo", ["inspect", "--tls-verify=false", "--raw", "docker://" + ref])
        #expect(raw.status == 0, "\(raw.stderr)")
        #expect(try skopeoArchitectures(raw.stdout) == ["amd64", "arm64"], "\(raw.stdout)")
        // The arm64 top layer: in the registry, not in the local store.
        let index = try JSONSerialization.jsonObject(with: Data(raw.stdout.utf8)) as? [String: Any]
        let arm = (index?["manifests"] as? [[String: Any]])?.first { ($0["platform"] as? [String: Any])?["architecture"] as? String == "arm64" }
        let armDigest = arm?["digest"] as? String ?? ""
        let manifest = try runProcess("/usr/bin/skopeo", ["inspect", "--tls-verify=false", "--raw", "docker://\(registry.host)/nodes/app@\(armDigest)"]).stdout
        let layers = (try JSONSerialization.jsonObject(with: Data(manifest.utf8)) as? [String: Any])?["layers"] as? [[String: Any]] ?? []
        let top = (layers.last?["digest"] as? String ?? "").replacingOccurrences(of: "sha256:", with: "")
        #expect(!top.isEmpty && access(w.local + "/state/blobs/sha256/" + top, F_OK) != 0, "the node's layer came here")
        let pulled = w.dir + "/pulled"
        let copy = try runProcess("/usr/bin/skopeo", ["copy", "-q", "--src-tls-verify=false", "--override-arch", "arm64", "docker://" + ref, "oci-archive:" + pulled])
        #expect(copy.status == 0, "\(copy.stderr)")
        let hash = try runProcess("/usr/bin/sha256sum", [], stdin: token).stdout.prefix(64)
        #expect(try w.fileInArchive(pulled, arch: "arm64", "tok") == hash + "\n")
        let grep = try runProcess("/bin/grep", ["-r", "-l", "-F", token, w.node])
        #expect(grep.stdout.isEmpty, "the secret is on the node's disk: \(grep.stdout)")
    }

    /// `--ssh default`: the user's agent reaches the node's RUN --mount=type=ssh through the same
    /// ssh session (a socket sshd makes there), removed when the build ends.
    @Test func theSSHAgentIsForwarded() throws {
        let w = try NodeWork("agent")
        try w.createBuilder()
        let ctx = try w.context(["Dockerfile": "FROM busybox\nRUN --mount=type=ssh [ -S \"$SSH_AUTH_SOCK\" ] && echo $SSH_AUTH_SOCK > /agent\n"])
        let out = w.local + "/out.tar"
        let script = """
            # In the foreground, stopped by this script: a daemon agent would keep this shell's
            # descriptors (the test's process monitor) open after it ends.
            ssh-agent -D -a '\(w.local)/agent.sock' >/dev/null 2>&1 & agent=$!
            trap 'kill -9 $agent' EXIT   # SIGKILL: the test runner's children may inherit SIGTERM ignored
            export SSH_AUTH_SOCK='\(w.local)/agent.sock'
            for i in $(seq 50); do [ -S "$SSH_AUTH_SOCK" ] && break; sleep 0.1; done
            ssh-add -q '\(w.f.dir)/client/id' || exit 3
            '\(w.f.binary)' build --builder multi --root '\(w.local)/state' --platform linux/arm64 --ssh default -o type=oci,dest='\(out)' '\(ctx)'
            """
        let r = try w.local(["/bin/sh", "-c", script])
        #expect(r.status == 0, "\(r.stderr)")
        let path = try w.fileInArchive(out, arch: "arm64", "agent").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(path.hasPrefix("/tmp/rbuild-agent-") || path.hasPrefix("/run/"), "\(path)")
        let left = try runProcess("/bin/sh", ["-c", "ls /tmp | grep '^rbuild-agent-' || true"]).stdout
        #expect(left.isEmpty, "agent sockets left on the node: \(left)")
    }

    /// A node that cannot be reached fails the build, naming the node and ssh's reason; nothing
    /// is written.
    @Test func aNodeThatIsDownFailsTheBuildByName() throws {
        let w = try NodeWork("down")
        try w.createBuilder("down", endpoint: "ssh://\(NodeEnv.remote)@127.0.0.1:1")
        let ctx = try w.context(["Dockerfile": "FROM busybox\nRUN true\n"])
        let out = w.local + "/out.tar"
        let r = try w.rbuild(["build", "--builder", "down", "--root", w.local + "/state", "--platform", "linux/amd64,linux/arm64",
                              "-o", "type=oci,dest=\(out)", ctx])
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("node down0 (ssh://\(NodeEnv.remote)@127.0.0.1:1)") && r.stderr.contains("Connection refused"), "\(r.stderr)")
        #expect(access(out, F_OK) != 0)
    }

    /// builder create/ls/inspect/use/rm; RBUILD_BUILDER and `use` choose the builder of a build.
    @Test func builderCommands() throws {
        let w = try NodeWork("builders")
        try w.createBuilder()
        let inspect = try w.rbuild(["builder", "inspect", "multi"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        #expect(inspect.stdout.contains("Version:   0.4.0") && inspect.stdout.contains("linux/arm64*"), "\(inspect.stdout)")
        #expect(try w.rbuild(["builder", "use", "multi"]).status == 0)
        let ls = try w.rbuild(["builder", "ls"])
        #expect(ls.stdout.contains("multi *") && ls.stdout.contains("multi0") && ls.stdout.contains(w.f.endpoint), "\(ls.stdout)")
        // The current builder builds without --builder.
        let ctx = try w.context(["Dockerfile": "FROM busybox\nRUN uname -m > /arch\n"])
        let r = try w.rbuild(["build", "--root", w.local + "/state", "--progress", "plain", "--platform", "linux/arm64", "-o", "type=oci,dest=\(w.local)/o.tar", ctx])
        #expect(r.status == 0 && r.stderr.contains("[multi0]"), "\(r.stderr)")
        #expect(try w.rbuild(["builder", "rm", "multi"]).status == 0)
        #expect(try w.rbuild(["builder", "inspect", "multi"]).status != 0)
        let after = try w.rbuild(["builder", "ls"])
        #expect(!after.stdout.contains("multi") && after.stdout.contains("default *"), "\(after.stdout)")
    }

    /// Ctrl-C (SIGINT to rbuild) stops the node's build too: no rbuild of the node user is left.
    @Test func anInterruptStopsTheNodesBuild() throws {
        let w = try NodeWork("interrupt")
        try w.createBuilder()
        let ctx = try w.context(["Dockerfile": "FROM busybox\nRUN sleep 60\n"])
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = ["--reuid=\(NodeEnv.local)", "--regid=\(NodeEnv.local)", "--init-groups", "/usr/bin/env", "-i"]
            + w.f.environment(NodeEnv.local, config: w.config).map { "\($0.key)=\($0.value)" }
            + [w.f.binary, "build", "--builder", "multi", "--root", w.local + "/state", "--platform", "linux/arm64", "-o", "type=oci,dest=\(w.local)/o.tar", ctx]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        func nodeProcesses() -> String {
            (try? runProcess("/usr/bin/pgrep", ["-u", NodeEnv.remote, "-a", "-f", "node-build|sleep 60"]))?.stdout ?? ""
        }
        // Over ssh and under qemu: up to a minute to start, half a minute to go.
        let started = waitFor(seconds: 60) { nodeProcesses().contains("sleep 60") }
        #expect(started, "the node's step never started")
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        #expect(p.terminationStatus == 130)
        var left = ""
        waitFor(seconds: 30) {
            left = nodeProcesses()
            return left.isEmpty
        }
        #expect(left.isEmpty, "still running on the node: \(left)")
    }

    /// imagetools create: an index of two images pushed separately (one from another
    /// repository, whose blobs are copied); imagetools inspect lists both platforms.
    @Test func imagetoolsCreateMergesTwoImages() throws {
        let w = try NodeWork("imagetools")
        let registry = try LocalRegistry(in: w.dir + "/registry")
        try w.check(w.rbuild(["import", "--root", w.local + "/state", Env.fixtures + "/rootfs-arm64", "busybox:latest", "--platform", "linux/arm64"]))
        let ctx = try w.context(["Dockerfile": "FROM busybox\nCOPY Dockerfile /d\n"])
        for (arch, repo) in [("amd64", "a"), ("arm64", "b")] {
            let r = try w.rbuild(["build", "--root", w.local + "/state", "--platform", "linux/" + arch, "-t", "\(registry.host)/\(repo):\(arch)", "--push", ctx])
            #expect(r.status == 0, "\(r.stderr)")
        }
        let target = "\(registry.host)/a:multi"
        let c = try w.rbuild(["imagetools", "create", "--root", w.local + "/state", "-t", target, "\(registry.host)/a:amd64", "\(registry.host)/b:arm64"])
        #expect(c.status == 0, "\(c.stderr)")
        let raw = try runProcess("/usr/bin/skopeo", ["inspect", "--tls-verify=false", "--raw", "docker://" + target])
        #expect(try skopeoArchitectures(raw.stdout) == ["amd64", "arm64"], "\(raw.stdout)")
        // Every blob of the copied image is in repository a now: skopeo copies all of it.
        let all = try runProcess("/usr/bin/skopeo", ["copy", "-q", "--all", "--src-tls-verify=false", "docker://" + target, "oci:" + w.dir + "/all"])
        #expect(all.status == 0, "\(all.stderr)")
        let i = try w.rbuild(["imagetools", "inspect", target])
        #expect(i.status == 0 && i.stdout.contains("Platform:    linux/amd64") && i.stdout.contains("Platform:    linux/arm64"), "\(i.stdout)\(i.stderr)")
        let dry = try w.rbuild(["imagetools", "create", "--root", w.local + "/state", "--dry-run", "\(registry.host)/a:amd64", "\(registry.host)/a:amd64"])
        #expect(dry.status == 0 && dry.stdout.contains("\"manifests\""), "\(dry.stdout)\(dry.stderr)")
    }
}

/// The architectures of an index's runnable entries, sorted.
func skopeoArchitectures(_ raw: String) throws -> [String] {
    let index = try JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any]
    return ((index?["manifests"] as? [[String: Any]]) ?? []).compactMap { ($0["platform"] as? [String: Any])?["architecture"] as? String }
        .filter { $0 != "unknown" }.sorted()
}

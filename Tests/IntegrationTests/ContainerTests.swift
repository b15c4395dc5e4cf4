import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// rbuild inside CI containers, as GitLab's docker executor or a Kubernetes pod runs it: Debian's
// docker.io engine, started by these tests as root on a private socket and data root, runs a
// Debian root made by debootstrap (with rbuild's shared libraries added, and rbuild bound in) as
// uid 1000 and as root, under the three shapes CI admins use: Docker's default seccomp profile
// (no user namespaces), `seccomp=unconfined` (user namespaces, but a masked /proc), and
// `seccomp=unconfined,systempaths=unconfined`. scripts/test runs this suite as root with
// RBUILD_CONTAINER_TESTS=1; rbuild itself only ever runs inside the containers.

enum ContainerEnv {
    static let enabled = Env.enabled && Env.vars["RBUILD_CONTAINER_TESTS"] == "1" && getuid() == 0
    /// Set by CI: an engine that cannot start fails the suite instead of skipping it.
    static let required = Env.vars["RBUILD_REQUIRE_DOCKER"] == "1"
}

/// dockerd on its own socket, data root and exec root (no iptables, no bridge: containers get
/// `--network none`), started once for the process and stopped when it exits.
final class DockerEngine: @unchecked Sendable {
    let dir: String
    let process: Process
    var socket: String { dir + "/docker.sock" }

    static let shared: Swift.Result<DockerEngine, FixtureError> = FixtureError.capture {
        let engine = try DockerEngine()
        atexit { if case .success(let e) = DockerEngine.shared { e.stop() } }
        return engine
    }

    init() throws {
        guard let dockerd = firstExecutable(["/usr/sbin/dockerd", "/usr/bin/dockerd"]) else {
            throw FixtureError(message: "dockerd is not installed (apt install docker.io; scripts/setup does)")
        }
        var template = Array("/tmp/rbuild-dockerd-XXXXXX".utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { throw POSIXError(.EIO) }
        dir = String(cString: p)
        process = Process()
        process.executableURL = URL(fileURLWithPath: dockerd)
        process.arguments = ["--host", "unix://\(dir)/docker.sock", "--data-root", dir + "/data", "--exec-root", dir + "/exec",
                             "--pidfile", dir + "/docker.pid", "--iptables=false", "--ip6tables=false", "--bridge=none",
                             "--exec-opt", "native.cgroupdriver=cgroupfs"]
        let log = FileHandle(forWritingAtPath: "/dev/null")
        FileManager.default.createFile(atPath: dir + "/dockerd.log", contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: dir + "/dockerd.log") ?? log
        process.standardError = process.standardOutput
        try process.run()
        // Up to a minute: a first start on a fresh machine sets up its data root.
        var answered = false
        waitFor(seconds: 60) {
            answered = (try? docker(["version", "--format", "{{.Server.Version}}"]))?.status == 0
            return answered || !process.isRunning
        }
        if answered { return }
        let text = (try? String(contentsOfFile: dir + "/dockerd.log", encoding: .utf8)) ?? ""
        stop()
        throw FixtureError(message: "dockerd did not start: " + text.split(separator: "\n").suffix(5).joined(separator: "\n"))
    }

    /// Debian's docker CLI.
    static let cli = firstExecutable(["/usr/bin/docker", "/usr/local/bin/docker"]) ?? "/usr/bin/docker"

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        _ = try? runProcess("/bin/rm", ["-rf", dir])
    }

    @discardableResult
    func docker(_ args: [String], timeout: Double = 300) throws -> Result {
        let cli = DockerEngine.cli
        return try runProcess(cli, ["-H", "unix://" + socket] + args, timeout: timeout)
    }

    /// The CI image: the debootstrap Debian root, the shared libraries rbuild links (copied
    /// from this Debian, at their paths), and a file outside any build that steps must never
    /// read. Made once.
    lazy var image: Swift.Result<String, FixtureError> = {
        let name = "rbuild-ci:debian"
        let debian = Env.fixtures + "/debian-bookworm-amd64.tar"
        guard access(debian, R_OK) == 0 else {
            return .failure(FixtureError(message: "\(debian) is missing (scripts/make-fixtures as root makes it)"))
        }
        let script = """
            set -e
            d=$(mktemp -d /tmp/rbuild-ci-image.XXXXXX)
            trap 'rm -rf "$d"' EXIT
            tar -C "$d" -xf "$1"
            # rbuild loads these at first use (dlopen, see CLazyLibraries and CRBuildCurl): ldd
            # does not list them, so they and what they link come too.
            lazy=""
            for so in libarchive.so.13 libcrypto.so.3 libsqlite3.so.0 libcurl.so.4 libseccomp.so.2 libcap.so.2 \\
                      libz.so.1 libzstd.so.1; do
              p=$(/sbin/ldconfig -p | awk -v s="$so" '$1 == s && /x86-64/ {print $NF; exit}')
              [ -n "$p" ] && lazy="$lazy $p"
            done
            for lib in $({ ldd "$2"; for p in $lazy; do echo "lazy => $p (0)"; ldd "$p"; done; } | awk '$3 ~ /^\\// {print $3}' | sort -u); do
              mkdir -p "$d$(dirname "$lib")"
              cp -L "$lib" "$d$lib"
            done
            printf 'escapee:x:4242:4242::/:/bin/sh\\n' > "$d/container-secret"
            chmod 0644 "$d/container-secret"
            tar -C "$d" -c . | "$3" -H "unix://$4" import - "$5" >/dev/null
            """
        let cli = DockerEngine.cli
        guard let r = try? runProcess("/bin/bash", ["-c", script, "image", debian, Env.binary, cli, socket, name], timeout: 300),
              r.status == 0 else {
            return .failure(FixtureError(message: "cannot make the CI image"))
        }
        return .success(name)
    }()
}

func firstExecutable(_ paths: [String]) -> String? {
    paths.first { access($0, X_OK) == 0 }
}

@Suite(.serialized, .enabled(if: ContainerEnv.enabled))
struct ContainerTests {
    /// What the CI admin allowed.
    enum Shape: String, CaseIterable, CustomTestStringConvertible {
        case defaultProfile, seccompUnconfined, unconfined
        var options: [String] {
            switch self {
            case .defaultProfile: return []
            case .seccompUnconfined: return ["--security-opt", "seccomp=unconfined"]
            case .unconfined: return ["--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined"]
            }
        }
        var testDescription: String { rawValue }
    }

    /// The engine, or nil when it cannot run here (said on stdout; a failure where CI requires it).
    func engine() throws -> DockerEngine? {
        switch DockerEngine.shared {
        case .success(let e): return e
        case .failure(let e):
            if ContainerEnv.required { throw e }
            print("ContainerTests: skipped: \(e.message)")
            return nil
        }
    }

    /// A work directory every container user may write, with the build context of the tests:
    /// a Dockerfile that RUNs and COPYs, another that tries to reach outside the build, and a
    /// context symlink to the container's secret file.
    func workDirectory() throws -> String {
        var template = Array("/tmp/rbuild-ci-work-XXXXXX".utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { throw POSIXError(.EIO) }
        let dir = String(cString: p)
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/ctx", withIntermediateDirectories: true)
        try "hello from the context\n".write(toFile: dir + "/ctx/hello.txt", atomically: true, encoding: .utf8)
        try """
            FROM base:1
            COPY hello.txt /hello.txt
            RUN cat /hello.txt > /copied && echo ran > /ran && id -u > /uid
            """.write(toFile: dir + "/ctx/Dockerfile", atomically: true, encoding: .utf8)
        // The symlink class: a context link to a file of the container is resolved inside the
        // context when named (not found), copied as a link with its directory, and no step
        // reaches the file through it, through /proc, or through "..".
        try fm.createSymbolicLink(atPath: dir + "/ctx/link", withDestinationPath: "/container-secret")
        try """
            FROM base:1
            COPY link /link
            """.write(toFile: dir + "/ctx/Link.Dockerfile", atomically: true, encoding: .utf8)
        try """
            FROM base:1
            COPY . /ctx/
            RUN test "$(readlink /ctx/link)" = /container-secret && ! cat /ctx/link && ! cat /container-secret \\
                && ! cat /proc/1/root/container-secret && ! cat /../../../container-secret \\
                && if [ ! -d /proc/self ]; then ! chroot / true; fi && echo contained
            """.write(toFile: dir + "/ctx/Escape.Dockerfile", atomically: true, encoding: .utf8)
        // RUN --mount in every isolation (the chroot one puts each in place and takes it back).
        try """
            FROM base:1 AS data
            RUN echo from-stage > /data.txt
            FROM base:1
            RUN --mount=type=cache,target=/cache echo cached-run > /cache/log
            RUN --mount=type=cache,target=/cache cat /cache/log > /cache-seen
            RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/y && test -f /scratch/y
            RUN --mount=type=bind,source=hello.txt,target=/mnt/hello cat /mnt/hello > /bound
            RUN --mount=type=bind,from=data,source=/data.txt,target=/mnt/data cat /mnt/data > /from-stage
            RUN --mount=type=secret,id=tok,target=/run/secrets/tok test -s /run/secrets/tok && echo secret-seen > /secret-seen
            RUN test ! -e /cache && test ! -e /scratch && test ! -e /mnt && test ! -e /run/secrets/tok \\
                && cat /cache-seen /bound /from-stage /secret-seen && echo mounts-gone
            """.write(toFile: dir + "/ctx/Mounts.Dockerfile", atomically: true, encoding: .utf8)
        // The hidden-file class: an image whose /etc/passwd is a symlink out of its root (to the
        // container's file that names the user) must not find that user.
        try """
            FROM base:2
            USER escapee
            RUN id -u
            """.write(toFile: dir + "/ctx/Hidden.Dockerfile", atomically: true, encoding: .utf8)
        _ = try runProcess("/bin/chmod", ["-R", "a+rwX", dir])
        return dir
    }

    /// Runs `script` in the CI image as `user` under `shape`, with rbuild and the fixtures bound
    /// in read-only and the work directory at /work.
    func runInContainer(_ engine: DockerEngine, image: String, user: String, shape: Shape, work: String,
                        script: String) throws -> Result {
        try engine.docker(["run", "--rm", "--network", "none", "--user", user] + shape.options
                          + ["-v", Env.binary + ":/usr/local/bin/rbuild:ro", "-v", Env.fixtures + ":/fixtures:ro",
                             "-v", work + ":/work", "-e", "HOME=/tmp/home", image, "/bin/sh", "-c", script])
    }

    static let buildScript = """
        set -e
        mkdir -p "$HOME" && cd /work/ctx
        rbuild info | grep -E '^(isolation|identity)'
        rbuild import /fixtures/rootfs-amd64 base:1 >/dev/null
        cp -a /fixtures/rootfs-amd64 /tmp/base2 && ln -sf /container-secret /tmp/base2/etc/passwd
        rbuild import /tmp/base2 base:2 >/dev/null
        out=/work/image-$(id -u).tar
        rbuild build --progress plain --network none -o type=oci,dest=$out . 2>&1
        echo "== mounts"
        rbuild build --progress plain --network none --secret id=tok,env=HOME -f Mounts.Dockerfile . 2>&1
        echo "== link"
        rbuild build --progress plain --network none -f Link.Dockerfile . > /work/link.log 2>&1 && echo "link: copied" || echo "link: refused"
        grep -o '"link" not found in the build context' /work/link.log || true
        echo "== escape"
        rbuild build --progress plain --network none -f Escape.Dockerfile . 2>&1
        echo "== hidden"
        if rbuild build --progress plain --network none -f Hidden.Dockerfile . > /work/hidden.log 2>&1; then
          echo "hidden: built"
        else
          echo "hidden: refused"
        fi
        cat /work/hidden.log
        """

    @Test(arguments: Shape.allCases)
    func buildsInCIContainer(shape: Shape) throws {
        guard let engine = try engine() else { return }
        let image = try engine.image.get()
        for user in ["1000", "0"] {
            let work = try workDirectory()
            defer { _ = try? runProcess("/bin/rm", ["-rf", work]) }
            let r = try runInContainer(engine, image: image, user: user, shape: shape, work: work, script: ContainerTests.buildScript)
            let output = r.stdout + r.stderr
            let expected: String? = switch (shape, user) {
            case (.defaultProfile, "1000"): nil
            case (.defaultProfile, _): "chroot"
            case (.seccompUnconfined, _): "no-pid-sandbox"
            case (.unconfined, _): "sandbox"
            }
            guard let expected else {
                // No user namespaces and not root: one message naming the two settings.
                #expect(r.status != 0 && r.status < 128, "user \(user), \(shape): \(output)")
                #expect(output.contains("rbuild cannot isolate RUN steps here"), "\(output)")
                #expect(output.contains("seccomp=unconfined") && output.contains("--user 0"), "\(output)")
                continue
            }
            #expect(r.status == 0, "user \(user), \(shape): \(output)")
            #expect(output.contains("isolation: \(expected):"), "user \(user), \(shape): \(output)")
            if expected != "sandbox" {
                #expect(output.contains("isolation: \(expected) ("), "the build says so: \(output)")
            }
            // The symlink class, refused in every mode; the hidden-file class too.
            #expect(output.contains("\ncontained\n") || output.contains(" contained\n"), "user \(user), \(shape): \(output)")
            #expect(output.contains("hidden: refused"), "user \(user), \(shape): \(output)")
            #expect(output.contains("mounts-gone") && output.contains("cached-run") && output.contains("from-stage")
                    && output.contains("secret-seen") && output.contains("hello from the context"), "user \(user), \(shape): \(output)")
            #expect(output.contains("link: refused") && output.contains("\"link\" not found in the build context"),
                    "user \(user), \(shape): \(output)")
            #expect(!output.contains("4242"), "user \(user), \(shape): \(output)")
            try checkImage(work + "/image-\(user == "0" ? "0" : user).tar", context: "user \(user), \(shape)")
        }
    }

    /// The state dir on the container's overlayfs root, TMPDIR on a volume: kernel overlay
    /// snapshots keep their upper directories on the volume and are copied into the state dir
    /// when committed (whiteouts included); without such a volume they fall back to copy.
    @Test func overlayUpperDirectoriesLeaveTheContainersOverlayfs() throws {
        guard let engine = try engine() else { return }
        let image = try engine.image.get()
        let work = try workDirectory()
        defer { _ = try? runProcess("/bin/rm", ["-rf", work]) }
        try """
            FROM base:1
            RUN mkdir -p /a/b && echo one > /a/b/f && rm /etc/group
            RUN rm -r /a/b && echo two > /a/g
            RUN test ! -e /a/b && test ! -e /etc/group && cat /a/g > /seen
            """.write(toFile: work + "/ctx/Overlay.Dockerfile", atomically: true, encoding: .utf8)
        _ = try runProcess("/bin/chmod", ["-R", "a+rwX", work])
        let script = """
            set -e
            mkdir -p "$HOME" && cd /work/ctx
            rbuild info | grep -E '^  used:'
            rbuild import /fixtures/rootfs-amd64 base:1 >/dev/null
            rbuild build --progress plain --network none -f Overlay.Dockerfile -o type=oci,dest=/work/overlay.tar . 2>&1
            ls /work/tmp
            """
        for (tmp, expected) in [("/work/tmp", "used: overlay"), (nil, "used: copy")] {
            let env = tmp.map { ["-e", "TMPDIR=" + $0] } ?? []
            if let tmp { try FileManager.default.createDirectory(atPath: work + tmp.dropFirst(5), withIntermediateDirectories: true) }
            _ = try runProcess("/bin/chmod", ["-R", "a+rwX", work])
            let r = try engine.docker(["run", "--rm", "--network", "none", "--user", "1000"] + Shape.unconfined.options + env
                                      + ["-v", Env.binary + ":/usr/local/bin/rbuild:ro", "-v", Env.fixtures + ":/fixtures:ro",
                                         "-v", work + ":/work", "-e", "HOME=/tmp/home", image, "/bin/sh", "-c",
                                         tmp == nil ? script.replacingOccurrences(of: "ls /work/tmp", with: "true") : script])
            let output = r.stdout + r.stderr
            #expect(r.status == 0, "TMPDIR \(tmp ?? "unset"): \(output)")
            #expect(output.contains(expected), "TMPDIR \(tmp ?? "unset"): \(output)")
            if tmp != nil {
                #expect(output.contains("upper directories in /work/tmp"), "\(output)")
                #expect(output.contains("rbuild-upper-"), "the upper directories were on the volume: \(output)")
            }
            let inspect = try runProcess("/usr/bin/skopeo", ["inspect", "oci-archive:" + work + "/overlay.tar"])
            #expect(inspect.status == 0 && inspect.stdout.contains("sha256:"), "\(inspect.stderr)")
        }
    }

    /// skopeo reads the archive; its last layer holds what RUN wrote, and none of what the
    /// sandbox or the chroot put in the root for the step (/dev nodes, /etc/hosts).
    func checkImage(_ archive: String, context: String) throws {
        let inspect = try runProcess("/usr/bin/skopeo", ["inspect", "oci-archive:" + archive])
        #expect(inspect.status == 0, "\(context): \(inspect.stderr)")
        let info = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
        let layers = info?["Layers"] as? [String] ?? []
        #expect(layers.count == 3, "\(context): \(inspect.stdout)")
        guard let last = layers.last, last.hasPrefix("sha256:") else { return }
        let listing = try runProcess("/bin/sh", ["-c", "tar -xOf \"$1\" blobs/sha256/\(last.dropFirst(7)) | gzip -dcf | tar -tvf -", "sh", archive])
        #expect(listing.status == 0, "\(context): \(listing.stderr)")
        let names = listing.stdout.split(separator: "\n").map { String($0.split(separator: " ").last ?? "") }
        #expect(names.contains("ran") && names.contains("copied") && names.contains("uid"), "\(context): \(listing.stdout)")
        #expect(!names.contains { $0.hasPrefix("dev/") || $0 == "etc/hosts" || $0 == "etc/resolv.conf" || $0.hasPrefix("proc/") },
                "\(context): the layer holds what the isolation made: \(listing.stdout)")
    }
}

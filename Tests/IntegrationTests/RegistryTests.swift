import Foundation
import Testing

/// The CNCF distribution registry (Debian's docker-registry) on 127.0.0.1, started for one test
/// as this user, with htpasswd basic auth when `users` is given. Stopped when released.
final class LocalRegistry {
    let dir: String
    var port = 0
    var process = Process()
    var host: String { "\(ip):\(port)" }

    /// `token`: the realm of a token server (and its certificate) instead of htpasswd.
    let ip: String

    /// `tls`: serve HTTPS with this certificate and key (on `ip`, which must not be 127.0.0.1:
    /// rbuild talks plain HTTP to localhost).
    init(in dir: String, users: [String: String] = [:], token: (realm: String, certificate: String)? = nil,
         tls: (certificate: String, key: String)? = nil, ip: String = "127.0.0.1") throws {
        self.dir = dir
        self.ip = ip
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        // A port below the kernel's ephemeral range (32768+); another one if it was taken (the
        // registry then exits at once). Every answer of this registry carries `X-Rbuild-Test`
        // with this value: another test's registry on the same port is not taken for it.
        let identity = UUID().uuidString
        for _ in 0..<5 {
            port = Int.random(in: 20000..<32000)
            process = Process()
            var config = """
                version: 0.1
                log:
                  level: error
                storage:
                  filesystem:
                    rootdirectory: \(dir)/data
                http:
                  addr: \(ip):\(port)
                  headers:
                    X-Rbuild-Test: [\(identity)]

                """
            if let tls {
                config += "  tls:\n    certificate: \(tls.certificate)\n    key: \(tls.key)\n"
            }
            if !users.isEmpty {
                var lines = ""
                for (user, password) in users {
                    let hash = try runProcess("/usr/bin/python3", ["-c", "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))", password]).stdout.trimmed
                    lines += "\(user):\(hash)\n"
                }
                try lines.write(toFile: dir + "/htpasswd", atomically: false, encoding: .utf8)
                config += "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: \(dir)/htpasswd\n"
            }
            if let token {
                config += "auth:\n  token:\n    realm: \(token.realm)\n    service: rbuild-test\n    issuer: rbuild-test-issuer\n    rootcertbundle: \(token.certificate)\n"
            }
            try config.write(toFile: dir + "/config.yml", atomically: false, encoding: .utf8)
            process.executableURL = URL(fileURLWithPath: "/usr/bin/docker-registry")
            process.arguments = ["serve", dir + "/config.yml"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            // Up to 30 s: on two busy cores (parallel tests, a build beside them) the registry can
            // take several seconds to listen.
            let probe = ["-s", "-k", "-D", "-", "-o", "/dev/null", (tls == nil ? "http://" : "https://") + host + "/v2/"]
            var headers = ""
            waitFor(seconds: 30) {
                guard process.isRunning else { return true }
                guard let answer = try? runProcess("/usr/bin/curl", probe), answer.status == 0 else { return false }
                headers = answer.stdout
                return true
            }
            if headers.contains(identity) { return }
            // It exited (the port was taken), another registry answers there, or it never did.
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        throw FixtureError(message: "docker-registry did not start on \(host)")
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

@Suite("registries: pull and push against docker-registry, as an unprivileged user", .enabled(if: Env.enabled))
struct RegistryTests {
    func skopeo(_ args: [String], environment: [String: String]? = nil) throws -> Result {
        try runProcess("/usr/bin/skopeo", args, environment: environment)
    }

    /// rbuild pushes a two-platform build and skopeo reads it; skopeo pushes an archive and rbuild
    /// pulls it: the digests agree both ways. A Dockerfile's FROM finds the pushed image in the
    /// registry when the local store lacks it.
    @Test func pushPullInterop() throws {
        let b = try MultiPlatformBuildTests().fixture()
        let registry = try LocalRegistry(in: b.fs.dir + "/registry")
        let ctx = try b.context(["f": "f\n", "Dockerfile": "FROM busybox\nCOPY f /f\nRUN uname -m > /arch\n"])
        let ref = "\(registry.host)/rbuild/app:1"
        let r = try b.build(["--platform", "linux/amd64,linux/arm64", "-o", "type=registry,name=\(ref)", "--metadata-file", b.fs.dir + "/meta.json"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        let raw = try skopeo(["inspect", "--tls-verify=false", "--raw", "docker://" + ref])
        #expect(raw.status == 0, "\(raw.stderr)")
        let digest = "sha256:" + (try runProcess("/usr/bin/sha256sum", [], stdin: raw.stdout)).stdout.prefix(64)
        #expect(try b.file(b.fs.dir + "/meta.json").contains(digest), "the registry holds the index rbuild made")
        #expect(raw.stdout.contains("\"arm64\"") && raw.stdout.contains("\"amd64\""))
        // Pulled into an empty state dir: the same index, and it runs.
        let fresh = ["--root", b.fs.dir + "/fresh"]
        let pull = try rbuild(["pull"] + fresh + ["--platform", "linux/amd64,linux/arm64", ref])
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(pull.stdout.contains(digest))
        let run = try rbuild(["run"] + fresh + ["--platform", "linux/arm64", ref, "--", "cat", "/arch", "/f"])
        #expect(run.stdout == "aarch64\nf\n", "\(run.stderr)")
        // skopeo → registry → rbuild.
        let archive = b.fs.dir + "/busybox.tar"
        #expect(try rbuild(["save"] + b.root + ["--platform", "linux/amd64", "-o", "type=oci,dest=\(archive)", "busybox:latest"]).status == 0)
        let copy = try skopeo(["copy", "--dest-tls-verify=false", "oci-archive:" + archive, "docker://\(registry.host)/other/bb:2"])
        #expect(copy.status == 0, "\(copy.stderr)")
        let skopeoDigest = try skopeo(["inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://\(registry.host)/other/bb:2"]).stdout.trimmed
        let p2 = try rbuild(["pull"] + fresh + ["\(registry.host)/other/bb:2"])
        #expect(p2.status == 0, "\(p2.stderr)")
        #expect(p2.stdout.contains(skopeoDigest), "\(p2.stdout) vs \(skopeoDigest)")
        // rbuild push of a local image, in 100 KiB chunks (PATCH): skopeo sees the digest rbuild reports.
        var chunked = ProcessInfo.processInfo.environment
        chunked["RBUILD_UPLOAD_CHUNK"] = "102400"
        let push = try rbuild(["push"] + fresh + ["\(registry.host)/other/bb:2", "\(registry.host)/copied/bb:3"], environment: chunked)
        #expect(push.status == 0, "\(push.stderr)")
        let pushed = try skopeo(["inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://\(registry.host)/copied/bb:3"]).stdout.trimmed
        #expect(push.stdout.contains(pushed))
        // The same registry, another repository: the blobs are mounted, not sent again.
        let mount = try rbuild(["push"] + fresh + ["\(registry.host)/other/bb:2", "\(registry.host)/mounted/bb:4"])
        #expect(mount.status == 0, "\(mount.stderr)")
        #expect(mount.stderr.contains("mounted from other/bb") && !mount.stderr.contains("pushed sha256"), "\(mount.stderr)")
        // FROM an image only the registry has.
        let from = try b.context(["Dockerfile": "FROM \(registry.host)/other/bb:2\nRUN echo from-registry > /x\n"], name: "from")
        let f = try rbuild(["build", "--root", b.fs.dir + "/third", "--progress", "plain", "-t", "fromreg:1", from])
        #expect(f.status == 0, "\(f.stderr)")
        #expect(f.stderr.contains("[internal] pull \(registry.host)/other/bb:2"))
        // --push: buildx's shorthand for type=registry, under the -t names.
        let shorthand = try b.build(["--push", "-t", "\(registry.host)/rbuild/pushed:1"], ctx)
        #expect(shorthand.status == 0 && shorthand.stderr.contains("pushing to registry"), "\(shorthand.stderr)")
        #expect(try skopeo(["inspect", "--tls-verify=false", "--raw", "docker://\(registry.host)/rbuild/pushed:1"]).status == 0)
        // The registry stopped: a clear error.
        registry.stop()
        let down = try rbuild(["pull"] + ["--root", b.fs.dir + "/fourth", "\(registry.host)/other/bb:2"])
        #expect(down.status == 1)
        #expect(down.stderr.contains("is the registry \(registry.host) up and reachable?"), "\(down.stderr)")
    }

    /// htpasswd basic auth: refused without credentials (the message says how to log in), then
    /// `rbuild login` stores them in $DOCKER_CONFIG/config.json and push and pull work; logout.
    @Test func basicAuthAndLogin() throws {
        let b = try BuildFixture()
        let registry = try LocalRegistry(in: b.fs.dir + "/registry", users: ["alice": "s3cret"])
        var env = ProcessInfo.processInfo.environment
        env["DOCKER_CONFIG"] = b.fs.dir + "/docker"
        let ref = "\(registry.host)/private/bb:1"
        let denied = try rbuild(["push"] + b.root + ["busybox:latest", ref], environment: env)
        #expect(denied.status == 1)
        #expect(denied.stderr.contains("rbuild login \(registry.host)"), "\(denied.stderr)")
        let wrong = try rbuild(["login", "-u", "alice", "--password-stdin", registry.host], stdin: "nope\n", environment: env)
        #expect(wrong.status != 0)
        let login = try rbuild(["login", "-u", "alice", "--password-stdin", registry.host], stdin: "s3cret\n", environment: env)
        #expect(login.status == 0, "\(login.stderr)")
        #expect(try b.file(b.fs.dir + "/docker/config.json").contains(registry.host))
        let push = try rbuild(["push"] + b.root + ["busybox:latest", ref], environment: env)
        #expect(push.status == 0, "\(push.stderr)")
        let pull = try rbuild(["pull", "--root", b.fs.dir + "/fresh", ref], environment: env)
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(try rbuild(["logout", registry.host], environment: env).stdout.contains("Removing login credentials"))
        let after = try rbuild(["pull", "--root", b.fs.dir + "/again", ref], environment: env)
        #expect(after.status == 1)
        // A credential helper named in credHelpers answers instead (docker-credential-NAME get).
        let bin = b.fs.dir + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try "#!/bin/sh\nread server\necho \"$server\" >> \(b.fs.dir)/helper.log\necho '{\"Username\":\"alice\",\"Secret\":\"s3cret\"}'\n"
            .write(toFile: bin + "/docker-credential-rbtest", atomically: false, encoding: .utf8)
        chmod(bin + "/docker-credential-rbtest", 0o755)
        try #"{"credHelpers": {"\#(registry.host)": "rbtest"}}"#.write(toFile: b.fs.dir + "/docker/config.json", atomically: false, encoding: .utf8)
        env["PATH"] = bin + ":" + (env["PATH"] ?? "/usr/bin:/bin")
        // type=image,push=true: stored here and pushed, with the helper's credentials.
        let ctx = try b.context(["Dockerfile": "FROM busybox\nRUN echo pushed > /p\n"])
        let built = try rbuild(["build"] + b.root + ["--progress", "plain", "-o", "type=image,name=\(registry.host)/private/built:1,push=true", ctx],
                               environment: env)
        #expect(built.status == 0, "\(built.stderr)")
        #expect(try b.file(b.fs.dir + "/helper.log").contains(registry.host))
        let pulled = try rbuild(["pull", "--root", b.fs.dir + "/helped", "\(registry.host)/private/built:1"], environment: env)
        #expect(pulled.status == 0, "\(pulled.stderr)")
        // --pull fetches the base from the registry even though the store has one by that name.
        let pullCtx = try b.context(["Dockerfile": "FROM \(registry.host)/private/built:1\nRUN cat /p\n"], name: "pullctx")
        let again = try rbuild(["build", "--root", b.fs.dir + "/helped", "--progress", "plain", "--pull", pullCtx], environment: env)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.contains("[internal] pull \(registry.host)/private/built:1"))
    }

    /// A misbehaving proxy in front of `upstream`: `flip` flips one byte of every blob, `cut`
    /// closes the connection halfway through the first answer for each blob, `huge` answers
    /// manifests with JSON that goes on for 256 MiB (and logs `sent N`, the bytes it could send
    /// before the reader hung up), `retype` answers manifests with the other kind's Content-Type
    /// (an index's for a manifest, a manifest's for an index). Killed when the returned process is.
    func proxy(_ mode: String, upstream: String, log: String = "/dev/null") throws -> (Process, Int) {
        let script = """
            import http.server, urllib.request, sys
            up, mode, log, seen = sys.argv[1], sys.argv[2], sys.argv[3], set()
            class H(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    if mode == "huge" and "/manifests/" in self.path:
                        self.send_response(200)
                        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                        self.end_headers()
                        sent = 0
                        try:
                            self.wfile.write(b'{"schemaVersion":2,"layers":[],"pad":"')
                            while sent < 256 << 20:
                                self.wfile.write(b"x" * 65536)
                                sent += 65536
                        except OSError:
                            pass
                        open(log, "a").write("sent %d\\n" % sent)
                        self.close_connection = True
                        return
                    if self.headers.get("Range"):
                        open(log, "a").write(self.path + " " + self.headers.get("Range") + "\\n")
                    req = urllib.request.Request(up + self.path, headers={k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization", "range")})
                    try:
                        r = urllib.request.urlopen(req)
                        body, status, headers = r.read(), r.status, r.headers
                    except urllib.error.HTTPError as e:
                        body, status, headers = e.read(), e.code, e.headers
                    blob = "/blobs/" in self.path and len(body) > 1
                    if mode == "flip" and blob:
                        body = bytes([body[0] ^ 1]) + body[1:]
                    self.send_response(status)
                    for k in ("Content-Type", "Docker-Content-Digest", "WWW-Authenticate", "Content-Range"):
                        v = headers.get(k)
                        if mode == "retype" and k == "Content-Type" and "/manifests/" in self.path:
                            v = "application/vnd.oci.image.index.v1+json" if "manifest" in (v or "") else "application/vnd.oci.image.manifest.v1+json"
                        if v: self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if mode == "cut" and blob and self.path not in seen:
                        seen.add(self.path)
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(body)
                def log_message(self, *a): pass
            server = http.server.HTTPServer(("127.0.0.1", 0), H)
            print(server.server_port, flush=True)
            server.serve_forever()
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = ["-c", script, "http://\(upstream)", mode, log]
        return (p, try startReportingPort(p, name: "the \(mode) proxy"))
    }

    /// Bad answers: a flipped byte (the pull fails naming the digest, nothing unverified is
    /// stored), a connection cut mid-blob (resumed with a Range request: the pull succeeds), a
    /// manifest that goes on past 4 MiB (cut off there, not read to its end).
    @Test func badAnswers() throws {
        let b = try BuildFixture()
        let registry = try LocalRegistry(in: b.fs.dir + "/registry")
        #expect(try rbuild(["push"] + b.root + ["busybox:latest", "\(registry.host)/bb:1"]).status == 0)

        let (flip, flipPort) = try proxy("flip", upstream: registry.host)
        defer { kill(flip.processIdentifier, SIGKILL); flip.waitUntilExit() }
        let state = b.fs.dir + "/flipped"
        let r = try rbuild(["pull", "--root", state, "127.0.0.1:\(flipPort)/bb:1"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("is corrupt"), "\(r.stderr)")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: state + "/blobs/sha256")) ?? [] {
            let sum = try runProcess("/usr/bin/sha256sum", [state + "/blobs/sha256/" + name]).stdout.prefix(64)
            #expect(String(sum) == name, "only verified blobs are stored")
        }
        #expect(try rbuild(["images", "--root", state]).stdout.contains("bb:1") == false)

        let ranges = b.fs.dir + "/ranges.log"
        let (cut, cutPort) = try proxy("cut", upstream: registry.host, log: ranges)
        defer { kill(cut.processIdentifier, SIGKILL); cut.waitUntilExit() }
        let resumed = try rbuild(["pull", "--root", b.fs.dir + "/cut", "127.0.0.1:\(cutPort)/bb:1"])
        #expect(resumed.status == 0, "a cut connection is retried: \(resumed.stderr)")
        #expect((try? b.file(ranges))?.contains("bytes=") == true, "the retry resumed with a Range request")
        let run = try rbuild(["run", "--root", b.fs.dir + "/cut", "127.0.0.1:\(cutPort)/bb:1", "--", "echo", "whole"])
        #expect(run.stdout == "whole\n", "\(run.stderr)")

        let sent = b.fs.dir + "/sent.log"
        let (huge, hugePort) = try proxy("huge", upstream: registry.host, log: sent)
        defer { kill(huge.processIdentifier, SIGKILL); huge.waitUntilExit() }
        let big = try rbuild(["pull", "--root", b.fs.dir + "/huge", "127.0.0.1:\(hugePort)/bb:1"])
        #expect(big.status == 1)
        #expect(big.stderr.contains("manifest bb:1 from 127.0.0.1:\(hugePort) is larger than 4 MiB, the limit for a manifest or index: refused (stopped reading at "),
                "\(big.stderr)")
        // The proxy learns that the reader hung up when its next write fails: what it sent is
        // the 4 MiB read and what the sockets' buffers held, not the 256 MiB a reader to the end takes.
        waitFor(seconds: 30) { (try? b.file(sent))?.hasSuffix("\n") == true }
        let count = (try? b.file(sent))?.split(separator: " ").last.flatMap { Int(String($0).trimmed) } ?? -1
        #expect(count >= 0 && count < 64 << 20, "the proxy sent \(count) bytes")
    }

    /// The bearer-token flow: the registry's challenge names a token server (written for this
    /// test: ES256 JWTs with an x5c chain the registry trusts); anonymous requests are refused,
    /// logged-in ones get a token per scope, reused across requests.
    @Test func bearerTokenAuth() throws {
        let b = try BuildFixture()
        let dir = b.fs.dir + "/token"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try RegistryTests.tokenServer.write(toFile: dir + "/token_server.py", atomically: false, encoding: .utf8)
        // (A port picked here and a sleep after token.pem raced the server's start under CI's load.)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = [dir + "/token_server.py", dir, "alice", "s3cret"]
        let port = try startReportingPort(server, name: "the token server", errorLog: dir + "/server.err")
        defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
        let registry = try LocalRegistry(in: b.fs.dir + "/registry", token: ("http://127.0.0.1:\(port)/token", dir + "/token.pem"))
        var env = ProcessInfo.processInfo.environment
        env["DOCKER_CONFIG"] = b.fs.dir + "/docker"
        let ref = "\(registry.host)/tok/bb:1"
        let anonymous = try rbuild(["push"] + b.root + ["busybox:latest", ref], environment: env)
        #expect(anonymous.status == 1)
        #expect(anonymous.stderr.contains("token server") && anonymous.stderr.contains("rbuild login"), "\(anonymous.stderr)")
        #expect(try rbuild(["login", "-u", "alice", "--password-stdin", registry.host], stdin: "s3cret\n", environment: env).status == 0)
        let push = try rbuild(["push"] + b.root + ["busybox:latest", ref], environment: env)
        #expect(push.status == 0, "\(push.stderr)")
        let pull = try rbuild(["pull", "--root", b.fs.dir + "/fresh", ref], environment: env)
        #expect(pull.status == 0, "\(pull.stderr)")
        let log = try b.file(dir + "/token.log").split(separator: "\n")
        let pushTokens = log.filter { $0 == "user repository:tok/bb:pull,push" }.count
        #expect(pushTokens >= 1 && pushTokens <= 4, "a token per scope, reused for the push's requests: \(log)")
        #expect(log.contains("user repository:tok/bb:pull"))
    }

    static let tokenServer = #"""
import base64, datetime, json, os, sys, time, http.server, urllib.parse
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

dirpath, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rbuild-test-token")])
now = datetime.datetime.utcnow()
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
open(os.path.join(dirpath, "token.pem"), "wb").write(cert.public_bytes(serialization.Encoding.PEM))
der = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        auth = self.headers.get("Authorization", "")
        ok = auth == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        with open(os.path.join(dirpath, "token.log"), "a") as log:
            log.write("%s %s\n" % ("user" if ok else "anonymous", q.get("scope", [""])[0]))
        if not ok:
            self.send_response(401); self.end_headers(); return
        access = []
        for scope in q.get("scope", []):
            kind, repo, actions = scope.split(":")
            access.append({"type": kind, "name": repo, "actions": actions.split(",")})
        t = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [der]}
        claims = {"iss": "rbuild-test-issuer", "sub": user, "aud": q.get("service", [""])[0], "exp": t + 300,
                  "nbf": t - 10, "iat": t, "jti": os.urandom(8).hex(), "access": access}
        signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        r, s = decode_dss_signature(key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        token = signing + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass

server = http.server.HTTPServer(("127.0.0.1", 0), H)
print(server.server_port, flush=True)
server.serve_forever()
"""#

    /// TLS with the registry's own CA: refused without it (the message says where a CA goes),
    /// trusted from RBUILD_REGISTRY_CA and from ~/.config/containers/certs.d/HOST/ca.crt (then
    /// rbuild talks through libcurl with that CA); skopeo, given the same CA, sees the same digest.
    @Test func tlsWithCustomCA() throws {
        let b = try BuildFixture()
        let certs = b.fs.dir + "/certs"
        try FileManager.default.createDirectory(atPath: certs, withIntermediateDirectories: true)
        try RegistryTests.makeCertificates.write(toFile: certs + "/mkcerts.py", atomically: false, encoding: .utf8)
        let made = try runProcess("/usr/bin/python3", [certs + "/mkcerts.py", certs, "127.0.0.2"])
        #expect(made.status == 0, "\(made.stderr)")
        let registry = try LocalRegistry(in: b.fs.dir + "/registry", tls: (certs + "/server.pem", certs + "/server.key"), ip: "127.0.0.2")
        let ref = "\(registry.host)/tls/bb:1"
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = b.fs.dir + "/home"
        env["RBUILD_REGISTRY_CA"] = nil
        let untrusted = try rbuild(["push"] + b.root + ["busybox:latest", ref], environment: env)
        #expect(untrusted.status == 1)
        #expect(untrusted.stderr.contains("certs.d/\(registry.host)/ca.crt"), "\(untrusted.stderr)")
        var withCA = env
        withCA["RBUILD_REGISTRY_CA"] = certs + "/ca.pem"
        let push = try rbuild(["push"] + b.root + ["busybox:latest", ref], environment: withCA)
        #expect(push.status == 0, "\(push.stderr)")
        let dir = b.fs.dir + "/home/.config/containers/certs.d/" + registry.host
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: certs + "/ca.pem", toPath: dir + "/ca.crt")
        let pull = try rbuild(["pull", "--root", b.fs.dir + "/fresh", ref], environment: env)
        #expect(pull.status == 0, "\(pull.stderr)")
        let skopeoDigest = try runProcess("/usr/bin/skopeo", ["inspect", "--cert-dir", dir, "--format", "{{.Digest}}", "docker://" + ref]).stdout.trimmed
        #expect(!skopeoDigest.isEmpty && pull.stdout.contains(skopeoDigest), "\(pull.stdout) vs \(skopeoDigest)")
    }

    static let makeCertificates = #"""
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
d, ip = sys.argv[1], sys.argv[2]
now = datetime.datetime.utcnow()
def name(cn): return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
ca_key = ec.generate_private_key(ec.SECP256R1())
ca = (x509.CertificateBuilder().subject_name(name("rbuild test CA")).issuer_name(name("rbuild test CA"))
      .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
      .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
key = ec.generate_private_key(ec.SECP256R1())
cert = (x509.CertificateBuilder().subject_name(name(ip)).issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .sign(ca_key, hashes.SHA256()))
open(d + "/ca.pem", "wb").write(ca.public_bytes(serialization.Encoding.PEM))
open(d + "/server.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(d + "/server.key", "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
"""#
}

import Foundation
import RBuildOCI
import RBuildRegistry
import Testing

@Suite struct ReferenceTests {
    @Test(arguments: [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("user/app", "docker.io/user/app:latest"),
        ("docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/user/app:2", "docker.io/user/app:2"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b/c:tag", "localhost:5000/a/b/c:tag"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
        ("ghcr.io/org/app:v1.2.3-rc_1", "ghcr.io/org/app:v1.2.3-rc_1"),
        ("registry.example.com:443/x/y@sha256:" + String(repeating: "a", count: 64),
         "registry.example.com:443/x/y@sha256:" + String(repeating: "a", count: 64)),
        ("app:1@sha256:" + String(repeating: "b", count: 64), "docker.io/library/app:1@sha256:" + String(repeating: "b", count: 64)),
        ("[::1]:5000/app", "[::1]:5000/app:latest"),
        (String(repeating: "a", count: 237), "docker.io/library/" + String(repeating: "a", count: 237) + ":latest"),
        ("ghcr.io/" + String(repeating: "a", count: 247) + ":" + String(repeating: "t", count: 128),
         "ghcr.io/" + String(repeating: "a", count: 247) + ":" + String(repeating: "t", count: 128)),
        ("Registry.Example-1.com/a__b/c---d/e.f", "Registry.Example-1.com/a__b/c---d/e.f:latest"),
    ])
    func normalised(_ input: String, _ expected: String) throws {
        #expect(try Reference(parsing: input).description == expected)
    }

    @Test func parts() throws {
        let r = try Reference(parsing: "localhost:5000/team/app@sha256:" + String(repeating: "c", count: 64))
        #expect(r.registry == "localhost:5000")
        #expect(r.repository == "team/app")
        #expect(r.tag == nil)
        #expect(r.manifestReference == "sha256:" + String(repeating: "c", count: 64))
        #expect(r.usesPlainHTTP)
        let hub = try Reference(parsing: "busybox")
        #expect(hub.apiHost == "registry-1.docker.io")
        #expect(!hub.usesPlainHTTP)
        // A first component without a dot, a port or "localhost" is a path, not a registry.
        #expect(try Reference(parsing: "team/app").registry == "docker.io")
    }

    @Test(arguments: ["", "UPPER/case", "app:", "app:-bad", "a//b", "app@sha256:xyz", "app@md5:" + String(repeating: "a", count: 32),
                      "-app", "app:" + String(repeating: "t", count: 129),
                      // The registry and the path follow distribution's grammar (the first found
                      // by scripts/fuzz/reference).
                      "registry.example.comexample.com:4:443/team/app_name-x.y:v1.2.3", "ev il.com/app", "a..b/app",
                      "-host.com/app", "host-.com/app", "host.com:/app", "host.com:12a/app", "[::1/app", "[]:5000/app",
                      "[fe80::1%eth0]/app", "host.com\r\nX: y/app", "höst.com/app", "team/a..b", "team/a___b", "team/a_-b",
                      "team/a.-b", "team/a_",
                      // 255 characters, but not once docker.io/library/ is added (found by
                      // scripts/fuzz/reference: the name printed did not parse back).
                      String(repeating: "a", count: 255), "ghcr.io/" + String(repeating: "a", count: 248)])
    func invalid(_ input: String) {
        #expect(throws: RegistryError.self) { try Reference(parsing: input) }
    }
}

import Foundation
import Testing
@testable import RBuildNodes
import RBuildOCI
import RBuildSolver
import RBuildSystem

struct EndpointTests {
    @Test(arguments: [
        ("ssh://host", nil, "host", nil),
        ("ssh://me@host:2222", "me", "host", 2222),
        ("ssh://me@[::1]:22/", "me", "::1", 22),
        ("ssh://build-arm", nil, "build-arm", nil),
    ] as [(String, String?, String, Int?)])
    func parses(_ text: String, _ user: String?, _ host: String, _ port: Int?) throws {
        let e = try NodeEndpoint(parsing: text)
        #expect(e.user == user && e.host == host && e.port == port)
        #expect(try NodeEndpoint(parsing: e.description) == e)
    }

    @Test(arguments: ["host", "tcp://host", "ssh://", "ssh://host:0", "ssh://host:x", "ssh://-oProxyCommand=x", "ssh://-me@host", "ssh://h/path"])
    func refuses(_ text: String) {
        #expect(throws: NodeError.self) { try NodeEndpoint(parsing: text) }
    }

    @Test func theRemoteCommandIsQuotedForTheShell() {
        let e = try! NodeEndpoint(parsing: "ssh://u@h:2")
        let args = SSHClient.arguments(e, remote: ["/opt/r b/rbuild", "node-build", "--root", "it's"])
        #expect(args.last == "'/opt/r b/rbuild' node-build --root 'it'\\''s'")
        #expect(args.contains("u@h") && args.firstIndex(of: "--")! == args.count - 2)
    }
}

struct PlacementTests {
    func node(_ name: String, declared: [String] = [], native: [String]? = nil, emulated: [String] = []) -> BuilderNode {
        var n = BuilderNode(name: name, endpoint: try! NodeEndpoint(parsing: "ssh://" + name), platforms: declared)
        if let native { n.probe = NodeProbe(version: "0.4.0", architecture: "", native: native, emulated: emulated, time: 0) }
        return n
    }
    let amd = try! Platform(parsing: "linux/amd64"), arm = try! Platform(parsing: "linux/arm64"), riscv = try! Platform(parsing: "linux/riscv64")
    func local(_ p: Platform) -> Bool { p.architecture == "amd64" }

    @Test func declaredNodesTakeTheirPlatformsTheRestStaysHere() {
        let out = Placement.place([amd, arm], nodes: [node("a", declared: ["linux/arm64/v8"])], localNative: local)
        #expect(out.map { $0.node?.name } == [nil, "a"])
        #expect(out.map { $0.platforms.map(\.description) } == [["linux/amd64"], ["linux/arm64"]])
    }

    @Test func nativeBeatsEmulatedAndANativeHereBeatsAnEmulatedThere() {
        let nodes = [node("emu", native: ["linux/amd64"], emulated: ["linux/arm64", "linux/riscv64"]), node("arm", native: ["linux/arm64"])]
        let out = Placement.place([amd, arm, riscv], nodes: nodes, localNative: local)
        #expect(out.map { $0.node?.name } == ["emu", "arm"])
        #expect(out.map { $0.platforms.map(\.description) } == [["linux/amd64", "linux/riscv64"], ["linux/arm64"]])
        // amd64 runs natively here and only emulated there: it stays.
        let here = Placement.place([amd], nodes: [node("armbox", native: ["linux/arm64"], emulated: ["linux/amd64"])], localNative: local)
        #expect(here.map { $0.node?.name } == [nil])
        #expect(Placement.needsProbe([amd], nodes: [node("x")], localNative: local) == false)
        #expect(Placement.needsProbe([arm], nodes: [node("x")], localNative: local) == true)
        #expect(Placement.needsProbe([arm], nodes: [node("x", declared: ["linux/arm64"])], localNative: local) == false)
    }
}

struct BuilderStoreTests {
    @Test func createUseRemove() throws {
        let dir = try makeTemporaryDirectory(in: NSTemporaryDirectory(), prefix: "builders-")
        defer { try? removeTree(atPath: dir) }
        let store = BuilderStore(directory: dir)
        #expect(try store.resolve(nil) == nil)
        let b = BuilderConfig(name: "multi", nodes: [BuilderNode(name: "multi0", endpoint: try NodeEndpoint(parsing: "ssh://a@b:3"), platforms: ["linux/arm64"])])
        try store.save(b)
        #expect(try store.load("multi") == b)
        try store.use("multi")
        #expect(try store.resolve(nil) == b)
        #expect(try store.resolve("default") == nil)
        #expect(throws: NodeError.self) { try store.use("nope") }
        #expect(throws: NodeError.self) { try store.save(BuilderConfig(name: "../x", nodes: [])) }
        #expect(throws: NodeError.self) { try store.save(BuilderConfig(name: "default", nodes: [])) }
        try store.remove("multi")
        #expect(try store.resolve(nil) == nil && store.current() == nil)
    }
}

struct FrameTests {
    @Test func framesAndEventsRoundTrip() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let w = FrameWriter(fd: fds[1], what: "test")
        let writeEnd = fds[1]
        // More than a pipe holds: written by another thread while this one reads.
        Thread.detachNewThread {
            let big = [UInt8](repeating: 7, count: Frames.maximum + 10)
            try? w.write(.header, Array("{}".utf8))
            try? big.withUnsafeBytes { try w.write(chunked: .data, $0) }
            try? w.write(.event, Array("[0,\"O\",3,2,\"hé\\n\"]".utf8))
            try? w.write(.end)
            close(writeEnd)
        }
        let r = FrameReader(fd: fds[0], what: "test")
        #expect(try r.expect().kind == .header)
        let a = try r.expect(), b = try r.expect()
        #expect(a.kind == .data && a.bytes.count == Frames.maximum && b.bytes.count == 10)
        let e = try r.expect()
        #expect(e.kind == .event && e.bytes == Array("[0,\"O\",3,2,\"hé\\n\"]".utf8))
        #expect(try r.expect().kind == .end)
        #expect(try r.next() == nil)
        close(fds[0])
    }

    @Test func aCutStreamIsAnError() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        _ = write(fds[1], [FrameKind.data.rawValue, 0, 0, 0, 9, 1, 2], 7)
        close(fds[1])
        #expect(throws: NodeError.self) { try FrameReader(fd: fds[0], what: "test").next() }
        close(fds[0])
    }
}

struct ContextArchiveTests {
    func tar(of dir: String, ignore: String) throws -> [[UInt8]] {
        var chunks: [[UInt8]] = []
        _ = try ContextArchive.write(directory: dir, ignore: DockerIgnore(ignore)) { chunks.append(Array($0)) }
        return chunks
    }

    @Test func whatDockerignoreExcludesIsNotSentAndTheRestArrives() throws {
        let tmp = try makeTemporaryDirectory(in: NSTemporaryDirectory(), prefix: "ctx-")
        defer { try? removeTree(atPath: tmp) }
        let src = tmp + "/src", dst = tmp + "/dst"
        try FileManager.default.createDirectory(atPath: src + "/sub/deep", withIntermediateDirectories: true)
        try "a".write(toFile: src + "/a", atomically: false, encoding: .utf8)
        try "secret".write(toFile: src + "/sub/secret.key", atomically: false, encoding: .utf8)
        try "keep".write(toFile: src + "/sub/deep/keep", atomically: false, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: src + "/node_modules/x", withIntermediateDirectories: true)
        try "m".write(toFile: src + "/node_modules/x/m", atomically: false, encoding: .utf8)
        symlink("/etc/passwd", src + "/link")
        chmod(src + "/a", 0o751)
        let chunks = try tar(of: src, ignore: "**/*.key\nnode_modules\n")
        #expect(!chunks.joined().contains(Array("secret".utf8)))
        try FileManager.default.createDirectory(atPath: dst, withIntermediateDirectories: true)
        var queue = chunks
        try ContextArchive.extract(into: dst) { queue.isEmpty ? nil : queue.removeFirst() }
        #expect(try String(contentsOfFile: dst + "/sub/deep/keep", encoding: .utf8) == "keep")
        #expect(access(dst + "/sub/secret.key", F_OK) != 0 && access(dst + "/node_modules", F_OK) != 0)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dst + "/link") == "/etc/passwd")
        var st = stat()
        stat(dst + "/a", &st)
        #expect(st.st_mode & 0o7777 == 0o751)
    }

    /// A tar whose entries would leave the directory through a symlink or `..` writes nothing outside.
    @Test func entriesStayInside() throws {
        let tmp = try makeTemporaryDirectory(in: NSTemporaryDirectory(), prefix: "ctx-")
        defer { try? removeTree(atPath: tmp) }
        let outside = tmp + "/outside", src = tmp + "/src", dst = tmp + "/dst"
        for d in [outside, src + "/l", dst] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        // A tar of `l -> ../outside` followed by `l/x`: made by hand from two contexts' tars.
        try FileManager.default.removeItem(atPath: src + "/l")
        symlink(outside, src + "/l")
        let first = try tar(of: src, ignore: "")
        let other = tmp + "/other"
        try FileManager.default.createDirectory(atPath: other + "/l", withIntermediateDirectories: true)
        try "x".write(toFile: other + "/l/x", atomically: false, encoding: .utf8)
        let second = try tar(of: other, ignore: "l\n!l/x\n")
        // First tar without its end blocks, then the second's entry.
        var joined = first.joined().map { $0 }
        while joined.count >= 512 && joined.suffix(512).allSatisfy({ $0 == 0 }) { joined.removeLast(512) }
        joined += second.joined()
        var queue = [joined]
        do {
            try ContextArchive.extract(into: dst) { queue.isEmpty ? nil : queue.removeFirst() }
        } catch {}
        #expect(access(outside + "/x", F_OK) != 0)

        // `..` itself, also hidden behind a combining mark (one Character with the "/" before
        // it): refused, nothing written above the target.
        let target = dst + "/deep"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        for name in ["../y", "a/../../y", "../\u{301}y"] {
            var one = [ustarFile(name, "y")]
            #expect { try ContextArchive.extract(into: target) { one.isEmpty ? nil : one.removeFirst() } } throws: {
                ($0 as? OCIError)?.code == .unsafeEntry
            }
            #expect(access(dst + "/y", F_OK) != 0 && access(dst + "/\u{301}y", F_OK) != 0, "\(name)")
        }
        // The same hand-made archive with a safe name extracts: the refusals above are the names'.
        var safe = [ustarFile("ok", "y")]
        try ContextArchive.extract(into: target) { safe.isEmpty ? nil : safe.removeFirst() }
        #expect(try String(contentsOfFile: target + "/ok", encoding: .utf8) == "y")
    }

    /// One regular file as a ustar archive (header, data, end blocks), with any name.
    func ustarFile(_ name: String, _ content: String) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int) { for (i, b) in text.utf8.enumerated() { h[offset + i] = b } }
        put(name, at: 0)
        put("0000644\0", at: 100); put("0000000\0", at: 108); put("0000000\0", at: 116)
        put(String(format: "%011o\0", content.utf8.count), at: 124); put("00000000000\0", at: 136)
        put("        ", at: 148); put("0", at: 156); put("ustar\0", at: 257); put("00", at: 263)
        put(String(format: "%06o\0 ", h.reduce(0) { $0 + Int($1) }), at: 148)
        var data = Array(content.utf8)
        data += [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
        return h + data + [UInt8](repeating: 0, count: 1024)
    }
}

import CArchive
import Foundation
import Testing
import RBuildSystem
@testable import RBuildOCI

func run(_ tool: String, _ args: [String]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let out = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: out, as: UTF8.self))
}

/// A small tree with every kind of entry a layer must carry.
func makeTree(_ dir: String) throws {
    let fm = FileManager.default
    try fm.createDirectory(atPath: dir + "/etc/deep/er", withIntermediateDirectories: true)
    try "root:x:0:0::/root:/bin/sh\n".write(toFile: dir + "/etc/passwd", atomically: false, encoding: .utf8)
    try "data".write(toFile: dir + "/etc/deep/er/file", atomically: false, encoding: .utf8)
    link(dir + "/etc/passwd", dir + "/etc/passwd-hardlink")
    symlink("../etc/passwd", dir + "/etc/deep/link")
    let long = String(repeating: "n", count: 200)
    try "long".write(toFile: dir + "/etc/" + long, atomically: false, encoding: .utf8)
    chmod(dir + "/etc/deep/er/file", 0o4755)
    mkfifo(dir + "/fifo", 0o644)
    _ = try? run("/usr/bin/setfattr", ["-n", "user.test", "-v", "v", dir + "/etc/passwd"])
}

struct LayerTests {
    @Test(arguments: Compression.allCases)
    func tarIsValidAndCarriesEveryEntryKind(_ compression: Compression) throws {
        let tree = TempDir(), state = TempDir()
        try makeTree(tree.path)
        let store = try ContentStore(root: state.path)
        let layer = try writeLayer(fromDirectory: tree.path, store: store, options: LayerOptions(compression: compression))
        #expect(layer.descriptor.mediaType == compression.mediaType)
        try store.verify(layer.descriptor.digest)
        let flag = ["none": "", "gzip": "z", "zstd": "--zstd"][compression.rawValue]!
        let args = flag == "--zstd" ? ["--zstd", "-tvf", store.path(layer.descriptor.digest)] : ["-t\(flag)vf", store.path(layer.descriptor.digest)]
        let (status, listing) = try run("/bin/tar", args)
        #expect(status == 0, "\(listing)")
        #expect(listing.contains("etc/passwd-hardlink link to etc/passwd"))
        #expect(listing.contains("etc/deep/link -> ../etc/passwd"))
        #expect(listing.contains(String(repeating: "n", count: 200)))
        #expect(listing.contains("-rwsr-xr-x 0/0"), "mode and the invoking user recorded as root")
        #expect(listing.contains("prw-r--r--"))
        // The entries come sorted.
        // (GNU tar also warns about the xattr's pax keyword on a line of its own: skip it.)
        let names = listing.split(separator: "\n").filter { !$0.hasPrefix("/bin/tar:") && !$0.hasPrefix("tar:") }
            .map { $0.split(separator: " ", omittingEmptySubsequences: true)[5] }
        #expect(names == names.sorted())
    }

    @Test func sameTreeSameDigests() throws {
        let tree = TempDir(), a = TempDir(), b = TempDir()
        try makeTree(tree.path)
        let opts = LayerOptions(compression: .gzip, sourceDateEpoch: 1_700_000_000)
        let one = try importDirectory(tree.path, platform: Platform(architecture: "amd64"), store: ImageStore(root: a.path), options: opts)
        // Touching the files changes nothing once times are clamped.
        utimes(tree.path + "/etc/passwd", nil)
        let two = try importDirectory(tree.path, platform: Platform(architecture: "amd64"), store: ImageStore(root: b.path), options: opts)
        #expect(one.digest == two.digest)
        let l1 = try writeLayer(fromDirectory: tree.path, store: ContentStore(root: a.path), options: LayerOptions(compression: .zstd, sourceDateEpoch: nil))
        let l2 = try writeLayer(fromDirectory: tree.path, store: ContentStore(root: b.path), options: LayerOptions(compression: .zstd, sourceDateEpoch: nil))
        #expect(l1 == l2)
    }

    /// Against a base, a symlink whose target changed is in the layer even when both targets
    /// are bytes that are not UTF-8 (as Strings both would read "\u{FFFD}").
    @Test func aChangedNonUTF8LinkTargetIsInTheDiff() throws {
        let base = TempDir(), tree = TempDir(), state = TempDir()
        var when = [timespec(tv_sec: 1_600_000_000, tv_nsec: 0), timespec(tv_sec: 1_600_000_000, tv_nsec: 0)]
        for (dir, byte) in [(base.path, UInt8(0xFF)), (tree.path, UInt8(0xFE))] {
            let target: [CChar] = [CChar(bitPattern: byte), 0]
            #expect(symlink(target, dir + "/l") == 0)
            #expect(utimensat(AT_FDCWD, dir + "/l", &when, AT_SYMLINK_NOFOLLOW) == 0)
            #expect(utimensat(AT_FDCWD, dir, &when, 0) == 0)
        }
        let store = try ContentStore(root: state.path)
        #expect(try writeLayer(fromDirectory: base.path, base: base.path, store: store).entries == 0, "the same tree: no entry")
        #expect(try writeLayer(fromDirectory: tree.path, base: base.path, store: store).entries > 0)
    }

    @Test func aMissingDirectoryIsNamed() throws {
        let state = TempDir()
        #expect {
            try writeLayer(fromDirectory: "/no/such/dir", store: ContentStore(root: state.path))
        } throws: { ($0 as? OCIError)?.message.contains("cannot open directory /no/such/dir") == true }
    }
}

struct ExportTests {
    func image() throws -> (TempDir, ImageStore) {
        let tree = TempDir(), state = TempDir()
        try makeTree(tree.path)
        let store = try ImageStore(root: state.path)
        let amd = try importDirectory(tree.path, platform: Platform(architecture: "amd64"), store: store)
        _ = try store.add(platformManifest: amd, as: "demo:1")
        _ = tree
        return (state, store)
    }

    @Test func ociLayoutPassesSkopeoUmociAndOciImageTool() throws {
        let (state, store) = try image()
        let out = state.path + "/layout"
        try store.save("demo:1", platform: nil, to: .ociLayout(out))
        let (s1, inspect) = try run("/usr/bin/skopeo", ["inspect", "oci:\(out):1"])
        #expect(s1 == 0, "\(inspect)")
        #expect(inspect.contains("\"Architecture\": \"amd64\""))
        let (s2, validate) = try run("/usr/bin/oci-image-tool", ["validate", "--type", "image", "--ref", "name=1", out])
        #expect(s2 == 0, "\(validate)")
        let (s3, unpack) = try run("/usr/bin/umoci", ["unpack", "--rootless", "--image", "\(out):1", state.path + "/bundle"])
        #expect(s3 == 0, "\(unpack)")
        #expect(FileManager.default.fileExists(atPath: state.path + "/bundle/rootfs/etc/deep/er/file"))
    }

    @Test func multiPlatformIndexAndArchives() throws {
        let (state, store) = try image()
        let tree = TempDir()
        try "arm".write(toFile: tree.path + "/arch", atomically: false, encoding: .utf8)
        let arm = try importDirectory(tree.path, platform: try Platform(parsing: "linux/arm64"), store: store)
        let top = try store.add(platformManifest: arm, as: "demo:1")
        #expect(top.mediaType == MediaType.ociIndex)
        #expect(try store.platformManifests(of: top).compactMap { $0.platform?.description } == ["linux/amd64", "linux/arm64"])

        let archive = state.path + "/image.tar"
        try store.save("demo:1", platform: nil, to: .ociArchive(archive))
        let (s1, raw) = try run("/usr/bin/skopeo", ["inspect", "--raw", "oci-archive:\(archive):1"])
        #expect(s1 == 0, "\(raw)")
        #expect(raw.contains("linux") && raw.contains("arm64"))

        #expect {
            try store.save("demo:1", platform: nil, to: .dockerArchive(state.path + "/docker.tar"))
        } throws: { ($0 as? OCIError)?.message.contains("docker archives hold one platform") == true }
        try store.save("demo:1", platform: try Platform(parsing: "linux/arm64"), to: .dockerArchive(state.path + "/docker.tar"))
        let (s2, docker) = try run("/usr/bin/skopeo", ["inspect", "docker-archive:\(state.path)/docker.tar"])
        #expect(s2 == 0, "\(docker)")
        #expect(docker.contains("\"Architecture\": \"arm64\""))
        let (s3, copy) = try run("/usr/bin/skopeo", ["copy", "oci-archive:\(archive):1", "dir:\(state.path)/copied"])
        #expect(s3 == 0, "\(copy)")
    }

    @Test("podman load accepts the Docker archive", .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/podman")))
    func podmanLoad() throws {
        let (state, store) = try image()
        try store.save("demo:1", platform: nil, to: .dockerArchive(state.path + "/docker.tar"))
        let pod = ["--storage-driver", "vfs", "--root", state.path + "/podman-root", "--runroot", state.path + "/podman-run"]
        let (status, out) = try run("/usr/bin/podman", pod + ["load", "-i", state.path + "/docker.tar"])
        #expect(status == 0, "\(out)")
        #expect(out.contains("Loaded image: localhost/demo:1"), "\(out)")
    }

    @Test func namesAndRemoval() throws {
        let (state, store) = try image()
        defer { withExtendedLifetime(state) {} }
        #expect(try ImageStore.normalise("busybox") == "busybox:latest")
        #expect(try ImageStore.normalise("localhost:5000/a/b") == "localhost:5000/a/b:latest")
        #expect(try ImageStore.normalise("a:1") == "a:1")
        #expect(try store.lookup("demo:1") != nil)
        try store.remove("demo:1")
        #expect(try store.lookup("demo:1") == nil)
        #expect(throws: OCIError.self) { try store.remove("demo:1") }
    }
}

struct ParallelGzipTests {
    @Test func aLargeLayerIsValidMultiMemberGzip() throws {
        let tree = TempDir(), state = TempDir()
        var bytes = [UInt8](repeating: 0, count: 11 << 20)
        var x: UInt32 = 2463534242
        for i in bytes.indices { x ^= x << 13; x ^= x >> 17; x ^= x << 5; bytes[i] = UInt8(truncatingIfNeeded: x % 7) }
        try Data(bytes).write(to: URL(fileURLWithPath: tree.path + "/big"))
        let store = try ContentStore(root: state.path)
        let layer = try writeLayer(fromDirectory: tree.path, store: store, options: LayerOptions(compression: .gzip))
        let path = store.path(layer.descriptor.digest)
        #expect(try run("/bin/gzip", ["-t", path]).0 == 0)
        let (status, listing) = try run("/bin/tar", ["-tzvf", path])
        #expect(status == 0 && listing.contains("11534336"), "\(listing)")
        #expect(try uncompressedDigest(store.blob(layer.descriptor)) == layer.diffID)
        // Same input, same bytes.
        let again = try writeLayer(fromDirectory: tree.path, store: store, options: LayerOptions(compression: .gzip))
        #expect(again == layer)
    }
}

struct WhiteoutTests {
    @Test func overlayWhiteoutsBecomeOCIWhiteouts() throws {
        let tree = TempDir(), state = TempDir()
        try FileManager.default.createDirectory(atPath: tree.path + "/etc/opaque", withIntermediateDirectories: true)
        try "x".write(toFile: tree.path + "/etc/opaque/kept", atomically: false, encoding: .utf8)
        // A 0/0 character device needs CAP_MKNOD (or a user namespace); skip the part without it.
        let haveDevice = mknod(tree.path + "/etc/gone", S_IFCHR | 0o644, 0) == 0
        let marked = setxattr(tree.path + "/etc/opaque", "user.overlay.opaque", "y", 1, 0) == 0
            || setxattr(tree.path + "/etc/opaque", "trusted.overlay.opaque", "y", 1, 0) == 0
        let store = try ContentStore(root: state.path)
        let layer = try writeLayer(fromDirectory: tree.path, store: store, options: LayerOptions(compression: .none))
        let (status, listing) = try run("/bin/tar", ["-tf", store.path(layer.descriptor.digest)])
        #expect(status == 0)
        let names = listing.split(separator: "\n").map(String.init)
        if haveDevice {
            #expect(names.contains("etc/.wh.gone"))
            #expect(!names.contains("etc/gone"))
        }
        if marked {
            #expect(names.contains("etc/opaque/.wh..wh..opq"))
            #expect(names.firstIndex(of: "etc/opaque/.wh..wh..opq")! < names.firstIndex(of: "etc/opaque/kept")!)
        }
        #expect(haveDevice || marked, "the test could make neither kind of whiteout here")
    }
}

import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Issue 22: one copy of each built layer in the state dir (the snapshot; the blob packed from it
/// when an export asks, `LayerRecipe`), exports compressed by default and converted once, outputs
/// that share no inode with the store — as an unprivileged user.
@Suite("one copy of each layer, compressed exports", .enabled(if: Env.enabled))
struct StorageTests {
    static let bigSize = 64 << 20

    /// `du -sb`: apparent sizes, hard links once (what the issue measures).
    func du(_ path: String) throws -> Int {
        let r = try runProcess("/usr/bin/du", ["-sb", path])
        #expect(r.status == 0, "\(r.stderr)")
        return Int(r.stdout.split(separator: "\t")[0]) ?? -1
    }

    /// A context whose COPY brings a 64 MiB file (random: no compression helps), and whose RUN
    /// writes 16 MiB more.
    func bigContext(_ b: BuildFixture) throws -> String {
        let ctx = try b.context(["Dockerfile": "FROM busybox\nCOPY big /big\nRUN head -c 16777216 /big > /part\n"], name: "big")
        let r = try runProcess("/bin/sh", ["-c", "head -c \(StorageTests.bigSize) /dev/urandom > '\(ctx)/big'"])
        #expect(r.status == 0, "\(r.stderr)")
        return ctx
    }

    /// The layers' media types of the image in an OCI archive or layout, as skopeo reads them.
    func layerTypes(_ transport: String) throws -> [String] {
        let r = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", transport])
        #expect(r.status == 0, "\(r.stderr)")
        let m = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        return (m?["layers"] as? [[String: Any]] ?? []).compactMap { $0["mediaType"] as? String }
    }

    /// Store growth for a build that writes 80 MiB of files is at most 1.1× that (plus 1 MiB for
    /// the index, the history and the config), and no blob holds a built layer's bytes.
    @Test(arguments: ["overlay", "fuse-overlayfs"])
    func oneCopyOfABuiltLayer(snapshotter: String) throws {
        let b = try BuildFixture()
        let ctx = try bigContext(b)
        let before = try du(b.state)
        let r = try b.build(["--snapshotter", snapshotter, "-t", "big:1"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        let content = StorageTests.bigSize + (16 << 20)
        let growth = try du(b.state) - before
        #expect(Double(growth) <= 1.1 * Double(content) + Double(1 << 20), "the state dir grew by \(growth) bytes for \(content) of files")
        let blobs = b.state + "/blobs/sha256"
        for name in try FileManager.default.contentsOfDirectory(atPath: blobs) {
            #expect(try du(blobs + "/" + name) < 4 << 20, "blob \(name) holds a built layer's bytes")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.state + "/blobs/recipes").count == 2,
                "the COPY and the RUN layer are kept as their snapshots")
        // The image is whole all the same: run from it, save it, and check the saved bytes.
        #expect(try b.sh("big:1", "wc -c < /part").trimmed == "16777216")
        let layout = b.fs.dir + "/layout"
        let save = try rbuild(["save"] + b.root + ["-o", "type=oci,tar=false,dest=\(layout)", "big:1"])
        #expect(save.status == 0, "\(save.stderr)")
        let unpacked = b.fs.dir + "/unpacked"
        let umoci = try runProcess("/usr/bin/umoci", ["unpack", "--rootless", "--image", layout + ":1", unpacked])
        #expect(umoci.status == 0, "\(umoci.stderr)")
        #expect(try runProcess("/usr/bin/cmp", [ctx + "/big", unpacked + "/rootfs/big"]).status == 0)
    }

    /// `rbuild save` and `-o type=oci|docker` write gzip layers unless told otherwise; zstd and
    /// uncompressed on request; the saved blobs verify (skopeo copies them, checking every digest).
    @Test func exportsCompressByDefault() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["f": String(repeating: "compressible line\n", count: 4096),
                                 "Dockerfile": "FROM busybox\nCOPY f /f\nRUN cp /f /g\n"])
        let oci = b.fs.dir + "/build.tar", docker = b.fs.dir + "/docker.tar"
        let r = try b.build(["--snapshotter", "overlay", "-t", "c:1", "-o", "type=oci,dest=\(oci)", "-o", "type=docker,dest=\(docker)",
                             "-o", "type=image"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        let gzip = "application/vnd.oci.image.layer.v1.tar+gzip"
        let types = try layerTypes("oci-archive:" + oci)
        #expect(types.count == 3 && types.allSatisfy { $0 == gzip }, "\(types)")
        // A Docker archive names no media types: its layer files must be gzip streams.
        let unpacked = b.fs.dir + "/docker"
        try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
        #expect(try runProcess("/bin/tar", ["-xf", docker, "-C", unpacked]).status == 0)
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: unpacked + "/manifest.json"))) as? [[String: Any]]
        let files = manifest?.first?["Layers"] as? [String] ?? []
        #expect(files.count == 3)
        for f in files {
            let head = try FileHandle(forReadingFrom: URL(fileURLWithPath: unpacked + "/" + f)).read(upToCount: 2)
            #expect(head == Data([0x1f, 0x8b]), "\(f) is not gzip")
        }
        for (option, expected) in [("", gzip), (",compression=zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
                                   (",compression=uncompressed", "application/vnd.oci.image.layer.v1.tar")] {
            let out = b.fs.dir + "/save\(option.isEmpty ? "" : String(option.split(separator: "=")[1])).tar"
            let save = try rbuild(["save"] + b.root + ["-o", "type=oci,dest=\(out)\(option)", "c:1"])
            #expect(save.status == 0, "\(save.stderr)")
            let saved = try layerTypes("oci-archive:" + out)
            #expect(saved.count == 3 && saved.allSatisfy { $0 == expected }, "save\(option): \(saved)")
            let copy = try runProcess("/usr/bin/skopeo", ["copy", "-q", "oci-archive:" + out, "dir:" + out + ".dir"])
            #expect(copy.status == 0, "save\(option): \(copy.stderr)")
        }
        // An uncompressed export packs the layers straight into the output: the store keeps
        // them as snapshots, with no plain blob added.
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.state + "/blobs/recipes").count == 2)
    }

    /// A second export takes the conversion the first made (the same blob file, not a new one),
    /// and an exported layout shares no inode with the store.
    @Test func secondExportReusesTheConversionAndLayoutsAreCopies() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["f": String(repeating: "x", count: 1 << 20), "Dockerfile": "FROM busybox\nCOPY f /f\n"])
        #expect(try b.build(["-t", "s:1"], ctx).status == 0)
        let first = b.fs.dir + "/first", second = b.fs.dir + "/second"
        #expect(try rbuild(["save"] + b.root + ["-o", "type=oci,tar=false,dest=\(first)", "s:1"]).status == 0)
        var storeInodes: [String: (ino: UInt64, mtime: Int)] = [:]
        let blobs = b.state + "/blobs/sha256"
        for name in try FileManager.default.contentsOfDirectory(atPath: blobs) {
            var st = stat()
            #expect(lstat(blobs + "/" + name, &st) == 0)
            storeInodes[name] = (UInt64(st.st_ino), st.st_mtim.tv_sec * 1_000_000_000 + st.st_mtim.tv_nsec)
        }
        let layers = try runProcess("/usr/bin/skopeo", ["inspect", "--format", "{{range .Layers}}{{println .}}{{end}}", "oci:\(first):1"])
        let top = String(layers.stdout.split(separator: "\n").last ?? "").replacingOccurrences(of: "sha256:", with: "")
        #expect(storeInodes[top] != nil, "the gzip conversion of the COPY layer is in the store: \(layers.stdout)")
        sleep(1)
        #expect(try rbuild(["save"] + b.root + ["-o", "type=oci,tar=false,dest=\(second)", "s:1"]).status == 0)
        var st = stat()
        #expect(lstat(blobs + "/" + top, &st) == 0)
        #expect(UInt64(st.st_ino) == storeInodes[top]?.ino && st.st_mtim.tv_sec * 1_000_000_000 + st.st_mtim.tv_nsec == storeInodes[top]?.mtime,
                "the second save compressed the layer again")
        // No file of either layout is a store blob's inode (no hard links into the store).
        let storeSet = Set(storeInodes.values.map(\.ino))
        for dir in [first, second] {
            for name in try FileManager.default.contentsOfDirectory(atPath: dir + "/blobs/sha256") {
                var l = stat()
                #expect(lstat(dir + "/blobs/sha256/" + name, &l) == 0)
                #expect(!storeSet.contains(UInt64(l.st_ino)) && l.st_nlink == 1, "\(dir)/blobs/sha256/\(name) shares its inode")
            }
        }
    }

    /// prune --all removes the snapshots, and the images built keep every layer: those kept as
    /// snapshots become plain blobs first.
    @Test func pruneAllKeepsImagesWhole() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["f": "f\n", "Dockerfile": "FROM busybox\nCOPY f /f\nRUN echo r > /r\n"])
        #expect(try b.build(["-t", "p:1"], ctx).status == 0)
        let prune = try rbuild(["prune"] + b.root + ["--all"])
        #expect(prune.status == 0, "\(prune.stderr)")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: b.state + "/blobs/recipes")) ?? []).isEmpty)
        #expect(try b.sh("p:1", "cat /f /r") == "f\nr\n")
        let out = b.fs.dir + "/p.tar"
        let save = try rbuild(["save"] + b.root + ["-o", "type=oci,dest=\(out)", "p:1"])
        #expect(save.status == 0, "\(save.stderr)")
        #expect(try runProcess("/usr/bin/skopeo", ["copy", "-q", "oci-archive:" + out, "dir:" + out + ".dir"]).status == 0)
    }

    /// A snapshot edited after its layer was built no longer packs to its diffID: the export
    /// fails naming the layer and what to do, and leaves no output.
    @Test func aChangedSnapshotFailsTheExportClearly() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["f": "original\n", "Dockerfile": "FROM busybox\nCOPY f /f\n"])
        #expect(try b.build(["--snapshotter", "overlay", "-t", "e:1"], ctx).status == 0)
        let recipes = try FileManager.default.contentsOfDirectory(atPath: b.state + "/blobs/recipes")
        #expect(recipes.count == 1)
        let recipe = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: b.state + "/blobs/recipes/" + recipes[0])))
        let dir = ((recipe as? [String: Any])?["directory"] as? String).map { $0.hasPrefix("/") ? $0 : b.state + "/" + $0 } ?? ""
        try "edited\n".write(toFile: dir + "/f", atomically: false, encoding: .utf8)
        for output in ["type=oci,dest=\(b.fs.dir)/e.tar", "type=oci,dest=\(b.fs.dir)/e.tar,compression=uncompressed",
                       "type=oci,tar=false,dest=\(b.fs.dir)/layout,compression=uncompressed"] {
            let save = try rbuild(["save"] + b.root + ["-o", output, "e:1"])
            #expect(save.status == 1, "\(output): \(save.stderr)")
            #expect(save.stderr.contains("sha256:" + recipes[0]) && save.stderr.contains("changed since it was built")
                    && save.stderr.contains("rbuild prune --all"), "\(output): \(save.stderr)")
            #expect(!save.stderr.contains("Fatal error"), "\(save.stderr)")
        }
        #expect(access(b.fs.dir + "/e.tar", F_OK) != 0 && access(b.fs.dir + "/layout", F_OK) != 0)
        #expect(!FileManager.default.fileExists(atPath: b.state + "/blobs/sha256/" + recipes[0]), "no plain blob of the wrong bytes")
        // `rbuild check` packs it again too, and names the image that uses it.
        let check = try rbuild(["check"] + b.root)
        #expect(check.status == 1 && check.stdout.contains(recipes[0]) && check.stdout.contains("e:1"), "\(check.stdout) \(check.stderr)")
        #expect(try rbuild(["check"] + b.root + ["--repair"]).status == 0)
        let after = try rbuild(["save"] + b.root + ["-o", "type=oci,dest=\(b.fs.dir)/e.tar", "e:1"])
        #expect(after.status == 1 && after.stderr.contains("missing"), "\(after.stderr)")
    }
}

import CArchive
import Foundation
import RBuild
import RBuildOCI
import RBuildSystem
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The same suite over the three snapshotters, through the library, as an unprivileged user.
/// scripts/test sets RBUILD_REQUIRE_SNAPSHOTTERS=1, so a snapshotter that is unavailable there
/// fails instead of being skipped.
@Suite("Snapshotters, as an unprivileged user", .enabled(if: Env.enabled))
struct SnapshotterTests {
    static let requireAll = Env.vars["RBUILD_REQUIRE_SNAPSHOTTERS"] == "1"

    func available(_ kind: SnapshotterKind) -> Bool {
        let a = Snapshotters.availability(tasks: SandboxTasks()).first { $0.kind == kind }!
        if !a.available && Self.requireAll { Issue.record("\(kind) is unavailable: \(a.detail)") }
        return a.available
    }

    /// Runs `script` in a sandbox on `active`; returns its stdout, expecting success.
    func run(_ s: any Snapshotter, _ active: ActiveSnapshot, _ script: String, dir: String) throws -> String {
        var spec = SandboxSpec(root: s.mounts(active), argv: ["/bin/sh", "-c", script])
        spec.idMapping = s.mapping.mode
        let outPath = dir + "/out-\(UUID().uuidString)"
        let fd = open(outPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        defer { close(fd); unlink(outPath) }
        spec.stdout = fd
        let status = try Sandbox.run(spec)
        let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        #expect(status == 0, "\(script) → \(status): \(out)")
        return out
    }

    /// Names and modes/owners of a layer's entries.
    func entries(_ path: String) throws -> [String: (mode: UInt32, uid: Int64)] {
        let r = try TarReader(path: path)
        var out: [String: (UInt32, Int64)] = [:]
        while let e = try r.next() {
            out[String(cString: archive_entry_pathname(e))] = (UInt32(archive_entry_perm(e)), archive_entry_uid(e))
        }
        return out
    }

    static let deepPath = Array(repeating: "d", count: 2000).joined(separator: "/")
    static let longName = String(repeating: "n", count: 255)

    /// busybox plus the files the suite changes.
    func baseTree(_ fs: Rootfs) throws -> String {
        let t = fs.path
        let fm = FileManager.default
        try fm.createDirectory(atPath: t + "/data/dir2", withIntermediateDirectories: true)
        for (name, text) in [("a", "one\n"), ("del", "x"), ("dir2/c1", "c1"), ("dir2/c2", "c2"), ("chmodme", "m"),
                             ("owned", "o"), ("xattr", "x"), ("hard1", "h"), (Self.longName, "long\n")] {
            try text.write(toFile: t + "/data/" + name, atomically: false, encoding: .utf8)
        }
        chmod(t + "/data/chmodme", 0o644)
        #expect(link(t + "/data/hard1", t + "/data/hard2") == 0)
        #expect(symlink("a", t + "/data/link") == 0)
        #expect(setxattr(t + "/data/xattr", "user.rbuild", "kept", 4, 0) == 0)
        try fm.createDirectory(atPath: t + "/deep/" + Self.deepPath, withIntermediateDirectories: true)
        try "bottom\n".write(toFile: t + "/deep/" + Self.deepPath + "/leaf", atomically: false, encoding: .utf8)
        return t
    }

    static let change = """
        set -e
        echo new > /data/new
        echo two > /data/a
        rm /data/del
        rm -r /data/dir2; mkdir /data/dir2; echo n > /data/dir2/n
        chmod 600 /data/chmodme
        ln -s a /data/link2
        ln /data/a /data/hard3
        if [ "$CHOWN" = 1 ]; then chown 1000:1000 /data/owned; fi
        """

    static let inspect = """
        cat /data/a /data/new; ls /data/dir2; test ! -e /data/del && echo del-gone
        stat -c '%a' /data/chmodme; readlink /data/link2
        [ /data/a -ef /data/hard3 ] && echo hard3-linked; [ /data/hard1 -ef /data/hard2 ] && echo hard-linked
        cat /data/\(longName); cat /deep/\(deepPath)/leaf; stat -c '%u:%g' /data/owned
        """

    @Test(arguments: SnapshotterKind.allCases)
    func applyChangeDiffCommit(kind: SnapshotterKind) throws {
        guard available(kind) else { return }
        let fs = try Rootfs()
        let mapping = IDMapping.detect()
        defer { if mapping.mode != .single { try? Ownership.reclaim(fs.dir, mapping: mapping) } }
        let state = fs.dir + "/state"
        let store = try ImageStore(root: state)
        let base = try writeLayer(fromDirectory: try baseTree(fs), store: store.content)
        let s = try Snapshotters.make(kind, stateDirectory: state, tasks: SandboxTasks())
        let s0 = try s.apply(layer: store.content.blob(base.descriptor), diffID: base.diffID, name: "base",
                             on: Snapshot(chainID: nil, directories: []))
        #expect(s0.chainID == base.diffID)

        // The change, made by a shell in the sandbox.
        let active = try s.prepare(s0)
        let chown = mapping.mode == .subordinate ? "1" : "0"
        _ = try run(s, active, "CHOWN=\(chown)\n" + Self.change, dir: fs.dir)
        let layer = try s.diff(active, store: store.content, options: LayerOptions(sourceDateEpoch: nil))
        let s1 = try s.commit(active, diffID: layer.diffID)
        #expect(!FileManager.default.fileExists(atPath: active.directory), "commit consumed the active snapshot")

        // What the layer says: only the changes, deletions as whiteouts.
        let e = try entries(store.content.path(layer.descriptor.digest))
        for name in ["data/new", "data/a", "data/.wh.del", "data/dir2/n", "data/chmodme", "data/link2"] {
            #expect(e[name] != nil, "\(kind): \(name) in the diff; got \(e.keys.sorted())")
        }
        #expect(e["data/chmodme"]?.mode == 0o600)
        #expect(e["data/dir2/.wh..wh..opq"] != nil || (e["data/dir2/.wh.c1"] != nil && e["data/dir2/.wh.c2"] != nil),
                "\(kind): dir2's old entries hidden")
        #expect(e["bin/busybox"] == nil && e["data/\(Self.longName)"] == nil && !e.keys.contains { $0.hasSuffix("/leaf") },
                "\(kind): unchanged files stay out of the diff")
        if mapping.mode == .subordinate {
            #expect(e["data/owned"]?.uid == 1000, "\(kind): the chown maps back to 1000")
        }

        let expected = "two\nnew\nn\ndel-gone\n600\na\nhard3-linked\nhard-linked\nlong\nbottom\n"
            + (mapping.mode == .subordinate ? "1000:1000\n" : "0:0\n")
        // The committed snapshot as the next step sees it.
        let next = try s.prepare(s1)
        #expect(try run(s, next, Self.inspect, dir: fs.dir) == expected)
        try s.remove(next)
        #expect(!FileManager.default.fileExists(atPath: next.directory))

        // The same two layers applied from their blobs into a fresh store give the same root.
        let fresh = try Snapshotters.make(kind, stateDirectory: fs.dir + "/state2", tasks: SandboxTasks())
        var chain = try fresh.apply(layer: store.content.blob(base.descriptor), diffID: base.diffID, name: "base",
                                    on: Snapshot(chainID: nil, directories: []))
        chain = try fresh.apply(layer: store.content.blob(layer.descriptor), diffID: layer.diffID, name: "change", on: chain)
        #expect(chain.chainID == s1.chainID)
        let view = try fresh.prepare(chain)
        #expect(try run(fresh, view, Self.inspect, dir: fs.dir) == expected)
        try fresh.remove(view)

        // xattrs survive unpacking (the base layer's copy in the snapshotter's store).
        let unpacked = (kind == .copy ? chain.directories.last! : chain.directories.first!) + "/data/xattr"
        var v = [CChar](repeating: 0, count: 8)
        #expect(getxattr(unpacked, "user.rbuild", &v, 7) == 4 && String(cString: v) == "kept")
        let usage = try fresh.usage()
        #expect(usage.active == 0 && usage.committed >= 1 && usage.bytes > 0)
    }

    /// 50 layers, each adding a file and deleting the one before: the root shows the last only.
    @Test(arguments: SnapshotterKind.allCases)
    func fiftyLayerChain(kind: SnapshotterKind) throws {
        guard available(kind) else { return }
        let fs = try Rootfs()
        let state = fs.dir + "/state"
        let store = try ImageStore(root: state)
        let s = try Snapshotters.make(kind, stateDirectory: state, tasks: SandboxTasks())
        let base = try writeLayer(fromDirectory: fs.path, store: store.content)
        var chain = try s.apply(layer: store.content.blob(base.descriptor), diffID: base.diffID, name: "base",
                                on: Snapshot(chainID: nil, directories: []))
        let script = """
        import io, sys, tarfile
        for i in range(1, 51):
            with tarfile.open(f"{sys.argv[1]}/l{i}.tar", "w") as t:
                for name, data in [(f"chain/f{i}", f"{i}\\n".encode()), (f"chain/.wh.f{i-1}", b"")]:
                    e = tarfile.TarInfo(name); e.size = len(data); e.mode = 0o644; t.addfile(e, io.BytesIO(data))
        """
        #expect(try runProcess("/usr/bin/python3", ["-c", script, fs.dir]).status == 0)
        for i in 1...50 {
            let path = fs.dir + "/l\(i).tar"
            let fd = open(path, O_RDONLY)
            let (digest, _) = try store.content.ingest(fd: fd)
            close(fd)
            chain = try s.apply(layer: StoredBlob(path: path), diffID: digest, name: "l\(i)", on: chain)
        }
        #expect(kind == .copy ? chain.directories.count == 1 : chain.directories.count == 51)
        let active = try s.prepare(chain)
        #expect(try run(s, active, "ls /chain; cat /chain/f50", dir: fs.dir) == "f50\n50\n")
        try s.remove(active)
    }
}

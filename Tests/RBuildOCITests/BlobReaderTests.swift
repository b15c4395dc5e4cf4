import Foundation
import Testing
@testable import RBuildOCI

/// Ways a stored blob goes bad on disk.
enum Damage: String, CaseIterable, Sendable {
    case flippedByte, truncated, extended

    func apply(to path: String) {
        let fd = open(path, O_RDWR)
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        switch self {
        case .flippedByte:
            var b: UInt8 = 0
            pread(fd, &b, 1, st.st_size / 2)
            b ^= 0xff
            pwrite(fd, &b, 1, st.st_size / 2)
        case .truncated:
            ftruncate(fd, st.st_size - 100)
        case .extended:
            var b: UInt8 = 0
            pwrite(fd, &b, 1, st.st_size)
        }
    }
}

/// Every way a blob leaves the store: each must find each damage and name the digest.
enum BlobUse: String, CaseIterable, Sendable {
    case readWithSize, verify, readStream, copy, tar, decompress, layerTar

    func run(_ store: ContentStore, _ d: Descriptor, out: String) throws {
        switch self {
        case .readWithSize: _ = try store.read(d.digest, size: d.size)
        case .verify: try store.verify(d.digest)
        case .readStream: try BlobReader(store.blob(d)).forEach { _ in }
        case .copy: try store.copy(store.blob(d), to: out)
        case .tar:
            let r = try TarReader(store.blob(d))
            while let _ = try r.next() { try r.data { _ in } }
        case .decompress: try decompressLayer(store.blob(d)) { _ in }
        case .layerTar:
            let r = try TarReader(layer: LayerStream(store.blob(d)))
            while let _ = try r.next() { try r.data { _ in } }
        }
    }
}

struct BlobReaderTests {
    /// A layer of a few files (so that the tar and decompress readers have a real stream);
    /// uncompressed, a flipped byte in a file's data is found by nothing but the digest.
    func layer(in tmp: TempDir, compression: Compression = .gzip) throws -> (ContentStore, Descriptor) {
        let tree = tmp.path + "/tree"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        var x: UInt32 = 1
        for i in 0..<4 {
            var bytes = [UInt8](repeating: 0, count: 300_000)
            for j in bytes.indices { x = x &* 1_103_515_245 &+ 12345; bytes[j] = UInt8(truncatingIfNeeded: x >> 16) }
            try Data(bytes).write(to: URL(fileURLWithPath: "\(tree)/f\(i)"))
        }
        let store = try ContentStore(root: tmp.path + "/state")
        let l = try writeLayer(fromDirectory: tree, store: store, options: LayerOptions(compression: compression))
        return (store, l.descriptor)
    }

    @Test(arguments: Damage.allCases, BlobUse.allCases)
    func damageIsATypedErrorNamingTheDigest(_ damage: Damage, _ use: BlobUse) throws {
        for compression in [Compression.gzip, .none] {
            try damageIsFound(damage, use, compression)
        }
    }

    func damageIsFound(_ damage: Damage, _ use: BlobUse, _ compression: Compression) throws {
        let tmp = TempDir()
        let (store, d) = try layer(in: tmp, compression: compression)
        try use.run(store, d, out: tmp.path + "/out")   // intact: no error
        unlink(tmp.path + "/out")
        damage.apply(to: store.path(d.digest))
        do {
            try use.run(store, d, out: tmp.path + "/out")
            Issue.record("\(damage) of a \(compression) layer not found by \(use)")
        } catch let e as OCIError {
            #expect(e.code == .corruptBlob, "\(e)")
            #expect(e.message.contains("blob \(d.digest)"), "\(e.message)")
            #expect(e.message.contains("rbuild check --repair"), "\(e.message)")
        }
        // Nothing half-written stays behind.
        #expect(access(tmp.path + "/out", F_OK) != 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp.path).sorted() == ["state", "tree"])
    }

    @Test func aCopyIsANewInodeWithTheSameBytes() throws {
        let tmp = TempDir()
        let (store, d) = try layer(in: tmp)
        try store.copy(store.blob(d), to: tmp.path + "/out")
        var a = stat(), b = stat()
        stat(store.path(d.digest), &a)
        stat(tmp.path + "/out", &b)
        #expect(a.st_ino != b.st_ino)
        #expect(FileManager.default.contentsEqual(atPath: store.path(d.digest), andPath: tmp.path + "/out"))
    }

    @Test func aMissingBlobSaysTheImageIsIncomplete() throws {
        let tmp = TempDir()
        let (store, d) = try layer(in: tmp)
        unlink(store.path(d.digest))
        #expect(throws: OCIError.self) { try BlobReader(store.blob(d)) }
        for open in [{ _ = try TarReader(store.blob(d)) }, { _ = try TarReader(layer: LayerStream(store.blob(d))) }] {
            do {
                try open()
                Issue.record("opened a missing blob")
            } catch let e as OCIError {
                #expect(e.code == .missingBlob)
                #expect(e.message.contains("\(d.digest)") && e.message.contains("incomplete"), "\(e.message)")
            }
        }
    }

    @Test func checkFindsBadBlobsAndRepairRemovesThem() throws {
        let tmp = TempDir()
        let (store, d) = try layer(in: tmp)
        let good = try store.put(Array("fine".utf8))
        Damage.flippedByte.apply(to: store.path(d.digest))
        let report = store.check(repair: false)
        #expect(report.checked == 2)
        #expect(report.bad.map(\.digest) == [d.digest])
        #expect(report.bad.first?.actual != nil && report.bad.first?.actual != d.digest)
        #expect(report.bad.first?.size == d.size)
        #expect(store.contains(d.digest))
        let repaired = store.check(repair: true)
        #expect(repaired.bad.map(\.removed) == [true])
        #expect(!store.contains(d.digest) && store.contains(good))
        #expect(store.check(repair: false).bad.isEmpty)
    }
}

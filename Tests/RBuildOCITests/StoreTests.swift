import Foundation
import Testing
import RBuildSystem
@testable import RBuildOCI

final class TempDir: @unchecked Sendable {
    let path: String
    init() {
        var t = Array((NSTemporaryDirectory() + "rbuild-oci-XXXXXX").utf8CString)
        path = t.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

struct ContentStoreTests {
    @Test func putReadAndVerify() throws {
        let tmp = TempDir()
        let store = try ContentStore(root: tmp.path)
        let d = try store.put(Array("content".utf8))
        #expect(store.contains(d))
        #expect(try store.read(d) == Array("content".utf8))
        try store.verify(d)
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp.path + "/ingest").isEmpty)
    }

    @Test func aWrongExpectedDigestStoresNothing() throws {
        let tmp = TempDir()
        let store = try ContentStore(root: tmp.path)
        let wrong = Digest.of([9])
        #expect(throws: OCIError.self) { try store.put([1, 2, 3], expected: wrong) }
        #expect(store.allBlobs().isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp.path + "/ingest").isEmpty)
    }

    @Test func aFlippedByteIsFoundAndNamed() throws {
        let tmp = TempDir()
        let store = try ContentStore(root: tmp.path)
        let d = try store.put(Array(repeating: 7, count: 1000))
        let fd = open(store.path(d), O_WRONLY)
        var b: UInt8 = 8
        pwrite(fd, &b, 1, 500)
        close(fd)
        let actual = Digest.of(Array(repeating: 7, count: 500) + [8] + Array(repeating: 7, count: 499))
        for check in [{ _ = try store.read(d) }, { try store.verify(d) }] {
            do {
                try check()
                Issue.record("corruption not found")
            } catch let e as OCIError {
                #expect(e.code == .corruptBlob)
                #expect(e.message.contains("blob \(d) in \(tmp.path) is corrupt (its bytes hash to \(actual), 1000 bytes)"), "\(e.message)")
                #expect(e.message.contains("rbuild check --repair"))
            }
        }
    }

    @Test func concurrentWritersOfTheSameBlobBothSucceed() throws {
        let tmp = TempDir()
        let bytes = [UInt8](repeating: 42, count: 4 << 20)
        let results = DispatchQueue.global()
        let group = DispatchGroup()
        nonisolated(unsafe) var digests: [Digest?] = Array(repeating: nil, count: 4)
        let lock = NSLock()
        for i in 0..<4 {
            group.enter()
            results.async {
                let store = try? ContentStore(root: tmp.path)
                let digest = try? store?.put(bytes)
                lock.withLock { digests[i] = digest }
                group.leave()
            }
        }
        group.wait()
        #expect(Set(digests.compactMap { $0 }).count == 1)
        #expect(digests.allSatisfy { $0 != nil })
        try ContentStore(root: tmp.path).verify(digests[0]!)
    }

    @Test func garbageCollectionKeepsWhatImagesReach() throws {
        let tmp = TempDir()
        let images = try ImageStore(root: tmp.path)
        let rootfs = TempDir()
        try "hi".write(toFile: rootfs.path + "/f", atomically: false, encoding: .utf8)
        let m = try importDirectory(rootfs.path, platform: Platform(architecture: "amd64"), store: images)
        _ = try images.add(platformManifest: m, as: "keep")
        let stray = try images.content.put([1, 2, 3])
        let (n, _) = try images.pruneBlobs()
        #expect(n == 1)
        #expect(!images.content.contains(stray))
        #expect(images.content.allBlobs().count == 3, "manifest, config and layer stay")
    }
}

struct IngestTests {
    func file(_ tmp: TempDir, _ bytes: [UInt8]) throws -> Int32 {
        try Data(bytes).write(to: URL(fileURLWithPath: tmp.path + "/f"))
        return open(tmp.path + "/f", O_RDONLY)
    }

    @Test func withoutLimitsEverythingIsRead() throws {
        let tmp = TempDir()
        let store = try ContentStore(root: tmp.path + "/store")
        let bytes = [UInt8](repeating: 3, count: 3 << 20)
        let fd = try file(tmp, bytes)
        defer { close(fd) }
        let (d, size) = try store.ingest(fd: fd)
        #expect(d == Digest.of(bytes) && size == Int64(bytes.count))
    }

    @Test func readingStopsPastTheLimitOrTheExpectedSize() throws {
        let tmp = TempDir()
        let store = try ContentStore(root: tmp.path + "/store")
        let bytes = [UInt8](repeating: 3, count: 3 << 20)
        for (size, limit, code) in [(nil, Int64(1000), OCIError.Code.tooLarge), (Int64(1000), nil, .corruptBlob)] as [(Int64?, Int64?, OCIError.Code)] {
            let fd = try file(tmp, bytes)
            defer { close(fd) }
            #expect { _ = try store.ingest(fd: fd, expectedSize: size, limit: limit) } throws: { ($0 as? OCIError)?.code == code }
            #expect(lseek(fd, 0, SEEK_CUR) == 1001, "read no further than one byte past")
        }
        #expect(store.allBlobs().isEmpty)
    }
}

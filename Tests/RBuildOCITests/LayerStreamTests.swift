import Foundation
import Testing
import RBuildSystem
@testable import RBuildOCI

/// The one decompressor of layers: gzip (several members too), zstd (several frames, output
/// larger than its buffer), plain; a bomb stops at the limit, a wrong diff_id is named.
struct LayerStreamTests {
    /// `bytes` compressed by `tool` (gzip or zstd), stored; with its descriptor.
    func stored(_ bytes: [UInt8], _ tool: String?, in tmp: TempDir, parts: Int = 1) throws -> (ContentStore, Descriptor) {
        let store = try ContentStore(root: tmp.path + "/store")
        var blob: [UInt8] = []
        let size = bytes.count / parts
        for i in 0..<parts {
            let part = Array(bytes[(i * size)..<(i == parts - 1 ? bytes.count : (i + 1) * size)])
            guard let tool else { blob += part; continue }
            let file = tmp.path + "/part"
            try Data(part).write(to: URL(fileURLWithPath: file))
            let (s, out) = try run("/usr/bin/" + tool, ["-f", "-q", "-k", file])
            #expect(s == 0, "\(out)")
            blob += [UInt8](FileManager.default.contents(atPath: file + (tool == "gzip" ? ".gz" : ".zst"))!)
        }
        let d = try store.put(blob)
        return (store, Descriptor(mediaType: MediaType.ociLayer, digest: d, size: Int64(blob.count)))
    }

    /// Bytes that compress but not to nothing: a 5 MiB stretch of a cheap generator.
    static let payload: [UInt8] = {
        var x: UInt32 = 1
        return (0..<(5 << 20)).map { i in
            x = x &* 1_103_515_245 &+ 12345
            return i % 7 == 0 ? UInt8(truncatingIfNeeded: x >> 16) : UInt8(i % 251)
        }
    }()

    @Test("gzip members, zstd frames and plain bytes read back whole", arguments: [("gzip", 1), ("gzip", 3), ("zstd", 1), ("zstd", 3), (nil, 1)] as [(String?, Int)])
    func roundTrip(_ tool: String?, _ parts: Int) throws {
        let tmp = TempDir()
        let (store, d) = try stored(Self.payload, tool, in: tmp, parts: parts)
        let stream = try LayerStream(store.blob(d), diffID: Digest.of(Self.payload))
        try stream.finish()
        #expect(stream.count == Int64(Self.payload.count))
        #expect(stream.diffID == Digest.of(Self.payload))
    }

    @Test("a bomb stops at the limit, naming the layer", arguments: ["gzip", "zstd"])
    func bomb(_ tool: String) throws {
        let tmp = TempDir()
        // 64 MiB of zeros: a few KiB compressed.
        let (store, d) = try stored([UInt8](repeating: 0, count: 64 << 20), tool, in: tmp)
        #expect(d.size < 1 << 20)
        let stream = try LayerStream(store.blob(d), limit: 8 << 20)
        #expect {
            try stream.finish()
        } throws: { e in
            (e as? OCIError)?.message == "layer \(d.digest) unpacks to more than 8 MiB, the limit (--max-layer-size, RBUILD_MAX_LAYER_SIZE): refused"
        }
        #expect(stream.count <= 8 << 20, "nothing past the limit is handed out")
    }

    @Test func aWrongDiffIDIsNamed() throws {
        let tmp = TempDir()
        let (store, d) = try stored(Self.payload, "gzip", in: tmp)
        let claimed = Digest.of([1])
        #expect {
            try LayerStream(store.blob(d), diffID: claimed).finish()
        } throws: { e in
            (e as? OCIError)?.code == .diffIDMismatch
                && (e as? OCIError)?.message == "layer \(d.digest) unpacks to \(Digest.of(Self.payload)), not to \(claimed), the diff_id its image's config gives: refused"
        }
    }

    @Test func limitsReadFromTheFlagThenTheEnvironment() throws {
        #expect(try MaxLayerSize.resolve(flag: "512m") == 512 << 20)
        #expect(try MaxLayerSize.resolve(flag: nil) == (ProcessInfo.processInfo.environment[MaxLayerSize.variable].flatMap(parseByteSize) ?? 64 << 30))
        #expect {
            _ = try MaxLayerSize.resolve(flag: "lots")
        } throws: { e in
            (e as? OCIError)?.message == "--max-layer-size lots: not a size (such as 64GiB, 512m or 1073741824)"
        }
        #expect(throws: OCIError.self) { _ = try MaxLayerSize.resolve(flag: "0") }
        #expect(MaxLayerSize.describe(64 << 30) == "64 GiB" && MaxLayerSize.describe(1000) == "1000 bytes")
    }
}

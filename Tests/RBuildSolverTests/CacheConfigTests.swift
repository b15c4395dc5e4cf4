import Foundation
import RBuildOCI
@testable import RBuildSolver
import Testing

/// The exported cache's config (BuildKit's cacheconfig.v0) and the `--cache-from`/`--cache-to`
/// values.
@Suite struct CacheConfigTests {
    func digest(_ s: String) -> Digest { Digest.of(Array(s.utf8)) }

    func layer(_ name: String) -> CacheChainLayer {
        CacheChainLayer(diffID: digest("diff-" + name),
                        blob: Descriptor(mediaType: MediaType.ociLayerGzip, digest: digest("blob-" + name), size: Int64(name.count)))
    }

    @Test func roundTrip() throws {
        let a = layer("a"), b = layer("b"), c = layer("c")
        let records = [CacheRecord(key: digest("k1"), chain: [a]), CacheRecord(key: digest("k2"), chain: [a, b]),
                       CacheRecord(key: digest("k3"), chain: [a, c])]
        let bytes = try CacheConfigCodec.encode(records)
        let doc = try JSONDecoder().decode(CacheConfigDocument.self, from: Data(bytes))
        #expect(doc.layers?.count == 3, "a is written once for three chains")
        let provided = Dictionary(uniqueKeysWithValues: [a, b, c].map { ($0.blob.digest, $0.blob) })
        #expect(try CacheConfigCodec.decode(bytes, provided: provided, what: "test") == records)
        // A chain with no layer has no record (it would be BuildKit's key-only link).
        #expect(try CacheConfigCodec.decode(try CacheConfigCodec.encode([CacheRecord(key: digest("e"), chain: [])]),
                                            provided: [:], what: "test").isEmpty)
    }

    /// As BuildKit writes it: `parent` 0 left out (Go's omitempty), diffIDs in the index's
    /// annotations, records with inputs and without results, a `chains` result.
    @Test func buildKitShape() throws {
        let a = digest("blob-a"), b = digest("blob-b")
        let json = """
            {"layers":[{"blob":"\(a)","parent":-1},{"blob":"\(b)"}],
             "records":[{"digest":"\(digest("base"))"},
                        {"digest":"\(digest("k"))","layers":[{"createdAt":"2024-01-02T03:04:05Z","layer":1}],
                         "inputs":[[{"selector":"","link":0}]]},
                        {"digest":"\(digest("chained"))","chains":[{"layers":[0,1]}]}]}
            """
        func desc(_ d: Digest, _ diff: String) -> Descriptor {
            Descriptor(mediaType: MediaType.ociLayerGzip, digest: d, size: 10, annotations: ["containerd.io/uncompressed": digest(diff).description])
        }
        let records = try CacheConfigCodec.decode(Array(json.utf8), provided: [a: desc(a, "da"), b: desc(b, "db")], what: "test")
        #expect(records.map(\.key) == [digest("k"), digest("chained")])
        #expect(records[0].chain.map(\.diffID) == [digest("da"), digest("db")])
        #expect(records[1].chain.map(\.blob.digest) == [a, b])
    }

    @Test(arguments: [
        #"{"layers":[{"blob":"B","parent":0}],"records":[{"digest":"K","layers":[{"layer":0}]}]}"#,   // a loop
        #"{"layers":[{"blob":"B","parent":-1}],"records":[{"digest":"K","layers":[{"layer":7}]}]}"#,  // out of range
        #"{"layers":[{"blob":"B","parent":5}],"records":[{"digest":"K","layers":[{"layer":0}]}]}"#,   // parent out of range
        #"{"layers":[{"blob":"B","parent":-1}],"records":[{"digest":"K","chains":[{"layers":[0,3]}]}]}"#,
    ])
    func brokenChainsAreLeftOut(_ template: String) throws {
        let b = digest("b")
        let json = template.replacingOccurrences(of: "\"B\"", with: "\"\(b)\"").replacingOccurrences(of: "\"K\"", with: "\"\(digest("k"))\"")
        let provided = [b: Descriptor(mediaType: MediaType.ociLayerGzip, digest: b, size: 1,
                                      annotations: ["containerd.io/uncompressed": digest("d").description])]
        #expect(try CacheConfigCodec.decode(Array(json.utf8), provided: provided, what: "test").isEmpty)
    }

    @Test func layerWithoutDiffIDIsLeftOut() throws {
        let b = digest("b")
        let json = #"{"layers":[{"blob":"\#(b)","parent":-1}],"records":[{"digest":"\#(digest("k"))","layers":[{"layer":0}]}]}"#
        #expect(try CacheConfigCodec.decode(Array(json.utf8), provided: [:], what: "test").isEmpty)
        #expect(throws: OCIError.self) { try CacheConfigCodec.decode(Array("[1,2]".utf8), provided: [:], what: "test") }
    }

    @Test func inline() throws {
        let layers = [layer("a"), layer("b"), layer("c")]
        let records = [CacheRecord(key: digest("k1"), chain: Array(layers[...0])), CacheRecord(key: digest("k3"), chain: layers)]
        let text = try CacheConfigCodec.encodeInline(records, imageLayers: layers.map(\.blob))
        let decoded = try CacheConfigCodec.decodeInline(text, layers: layers.map(\.blob), diffIDs: layers.map(\.diffID), what: "test")
        #expect(decoded == records)
        #expect(throws: SolveError.self) { try CacheConfigCodec.decodeInline("%%%", layers: [], diffIDs: [], what: "test") }
        // A record past the image's layers names nothing.
        #expect(try CacheConfigCodec.decodeInline(text, layers: [layers[0].blob], diffIDs: [layers[0].diffID], what: "test")
                    == [records[0]])
    }

    @Test func importSpecs() throws {
        #expect(try CacheImportSpec.parse("type=local,src=/c").kind == .local(directory: "/c", tag: nil, digest: nil))
        #expect(try CacheImportSpec.parse("type=local,src=/c,tag=t").kind == .local(directory: "/c", tag: "t", digest: nil))
        #expect(try CacheImportSpec.parse("reg.example/app:cache").kind == .registry(reference: "reg.example/app:cache"))
        #expect(try CacheImportSpec.parse("type=registry,ref=r/a:c").kind == .registry(reference: "r/a:c"))
        for bad in ["type=local", "type=gha", "type=registry", "type=local,src=/c,mode=max", "src=/c", "type=local,src=/c,digest=md5:1"] {
            #expect(throws: SolveError.self, "\(bad)") { try CacheImportSpec.parse(bad) }
        }
        #expect(throws: SolveError.self) { try CacheImportSpec.parse("type=s3,bucket=b") }
    }

    @Test func exportSpecs() throws {
        let local = try CacheExportSpec.parse("type=local,dest=/c,mode=max,compression=zstd,compression-level=3,cache-mounts=true")
        #expect(local.kind == .local(directory: "/c", tag: "latest"))
        #expect(local.mode == .max && local.compression == .zstd && local.level == 3 && local.cacheMounts && !local.imageManifest)
        let reg = try CacheExportSpec.parse("r/a:cache")
        #expect(reg.kind == .registry(reference: "r/a:cache") && reg.mode == .min && reg.compression == .gzip)
        #expect(try CacheExportSpec.parse("type=registry,ref=r/a,image-manifest=true,ignore-error=true").imageManifest)
        #expect(try CacheExportSpec.parse("type=inline").kind == .inline)
        #expect(try CacheExportSpec.parse("type=local,dest=/c,compression=uncompressed").compression == .none)
        for bad in ["type=inline,mode=max", "type=local", "type=local,dest=/c,mode=all", "type=local,dest=/c,compression=lz4",
                    "type=local,dest=/c,compression-level=30", "type=local,dest=/c,cache-mounts=yes", "type=local,dest=/c,oci-mediatypes=false",
                    "type=local,dest=/c,src=/d", "type=azblob,name=x"] {
            #expect(throws: SolveError.self, "\(bad)") { try CacheExportSpec.parse(bad) }
        }
    }
}

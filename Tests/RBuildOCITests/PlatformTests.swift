import Foundation
import Testing
@testable import RBuildOCI
import RBuildSystem

struct PlatformMatchingTests {
    static func p(_ s: String) -> Platform {
        let parts = s.split(separator: "/").map(String.init)
        var p = Platform(os: parts[0], architecture: parts[1])
        // Raw, as a registry's JSON spells it: no normalisation on the way in.
        p.architecture = parts[1]
        p.variant = parts.count > 2 ? parts[2] : nil
        return p
    }

    // (wanted, what the index offers in its order, the entry expected, or nil for none)
    static let choices: [(String, [String], String?)] = [
        ("linux/arm64", ["linux/amd64", "linux/arm64/v8"], "linux/arm64/v8"),
        ("linux/arm64/v8", ["linux/amd64", "linux/arm64"], "linux/arm64"),
        ("linux/aarch64", ["linux/amd64", "linux/arm64/v8"], "linux/arm64/v8"),
        ("linux/x86_64", ["linux/arm64", "linux/amd64"], "linux/amd64"),
        ("linux/amd64", ["linux/amd64/v1"], "linux/amd64/v1"),
        ("linux/amd64", ["linux/amd64/v3", "linux/amd64/v2"], nil),
        ("linux/amd64/v3", ["linux/amd64", "linux/amd64/v2"], "linux/amd64/v2"),
        ("linux/amd64/v3", ["linux/amd64", "linux/amd64/v3"], "linux/amd64/v3"),
        ("linux/amd64/v2", ["linux/amd64"], "linux/amd64"),
        ("linux/amd64", ["linux/386"], nil),
        ("linux/arm", ["linux/arm/v6", "linux/arm/v7"], "linux/arm/v7"),
        ("linux/arm/v7", ["linux/arm/v5", "linux/arm/v6"], "linux/arm/v6"),
        ("linux/arm/7", ["linux/arm/v7"], "linux/arm/v7"),
        ("linux/arm/v6", ["linux/arm/v7"], nil),
        ("linux/armhf", ["linux/arm/v7"], "linux/arm/v7"),
        ("linux/arm64", ["linux/arm/v7"], nil),
        ("linux/riscv64", ["linux/amd64", "linux/arm64"], nil),
        ("linux/amd64", ["windows/amd64", "linux/amd64"], "linux/amd64"),
        // Levels past the last that exists step down from it, in a few steps (these listed
        // every level below: found by scripts/fuzz/reference, as a timeout).
        ("linux/amd64/v999999999", ["linux/amd64/v3", "linux/amd64/v4"], "linux/amd64/v4"),
        ("linux/arm/v99999999", ["linux/arm/v6", "linux/arm/v8"], "linux/arm/v8"),
        ("linux/amd64/x3", ["linux/amd64"], nil),
    ]

    @Test(arguments: choices)
    func bestMatch(_ wanted: String, _ offered: [String], _ expected: String?) throws {
        let entries = offered.enumerated().map { i, s in
            Descriptor(mediaType: MediaType.ociManifest, digest: Digest.of([UInt8(i)]), size: 1, platform: Self.p(s))
        }
        let wantedPlatform = try Platform(parsing: wanted)
        let chosen = PlatformMatcher(wantedPlatform).best(entries)
        #expect(chosen?.platform?.description == expected, "\(wanted) among \(offered)")
    }

    /// A wanted platform lists a few compatible ones, whatever its level; the first input is the
    /// one scripts/fuzz/reference timed out on (a variant whose digits were read as a level).
    @Test func aWantedPlatformListsFewCompatibleOnes() throws {
        #expect(try Platform(parsing: "\0\0\0\0\0l/amd64/\u{1}481141").compatible.count == 1)
        #expect(try Platform(parsing: "linux/amd64/v100000").compatible.map(\.description)
                == ["linux/amd64/v100000", "linux/amd64/v4", "linux/amd64/v3", "linux/amd64/v2", "linux/amd64"])
        #expect(try Platform(parsing: "linux/arm/v100000").compatible.count == 5)
    }

    @Test func attestationsAreNeverChosenOrListed() {
        let unknown = Platform(os: "unknown", architecture: "unknown")
        let att = Descriptor(mediaType: MediaType.ociManifest, digest: Digest.of([1]), size: 1,
                             annotations: ["vnd.docker.reference.type": "attestation-manifest",
                                           "vnd.docker.reference.digest": Digest.of([0]).description],
                             platform: unknown)
        let img = Descriptor(mediaType: MediaType.ociManifest, digest: Digest.of([0]), size: 1, platform: Self.p("linux/amd64"))
        #expect(att.isAttestation && !img.isAttestation)
        #expect(PlatformMatcher(Self.p("linux/amd64")).best([att, img])?.digest == img.digest)
        #expect(PlatformMatcher(unknown).best([att]) == nil)
        #expect(PlatformMatcher.describe([img, att]) == "linux/amd64")
    }

    @Test(arguments: [("linux/arm64/v8", "linux/arm64"), ("linux/aarch64", "linux/arm64"), ("linux/arm", "linux/arm/v7"),
                      ("linux/amd64/v1", "linux/amd64"), ("linux/x86_64", "linux/amd64"), ("linux/armel", "linux/arm/v6")])
    func normalForm(_ raw: String, _ normal: String) {
        #expect(Self.p(raw).normalized.description == normal)
        #expect(Self.p(raw).isSame(as: Self.p(normal)))
    }
}

/// Indexes in the shapes registries serve, stored the way `rbuild pull` and `load` leave them.
struct IndexShapeTests {
    /// Stores a one-layer image for `arch` (variant `variant`) and returns its manifest descriptor
    /// without a platform, as some lists are written.
    static func image(_ store: ImageStore, arch: String, variant: String? = nil, docker: Bool = false) throws -> Descriptor {
        let layer = try store.content.put(Array("layer-\(arch)".utf8))
        var config = ImageConfig(created: nil, author: nil, architecture: arch, os: "linux", variant: variant, config: nil,
                                 rootfs: .init(diff_ids: [layer]), history: nil)
        config.variant = variant
        let cbytes = try canonicalJSON(config)
        let cd = try store.content.put(cbytes)
        let m = Manifest(mediaType: docker ? MediaType.dockerManifest : MediaType.ociManifest,
                         config: Descriptor(mediaType: docker ? MediaType.dockerConfig : MediaType.ociConfig, digest: cd, size: Int64(cbytes.count)),
                         layers: [Descriptor(mediaType: docker ? MediaType.dockerLayerGzip : MediaType.ociLayer, digest: layer, size: 9)])
        let bytes = try canonicalJSON(m)
        return Descriptor(mediaType: m.mediaType!, digest: try store.content.put(bytes), size: Int64(bytes.count))
    }

    static func index(_ store: ImageStore, _ entries: [Descriptor], docker: Bool = false) throws -> Descriptor {
        let type = docker ? MediaType.dockerManifestList : MediaType.ociIndex
        let bytes = try canonicalJSON(Index(mediaType: type, manifests: entries))
        return Descriptor(mediaType: type, digest: try store.content.put(bytes), size: Int64(bytes.count))
    }

    @Test func nestedIndexWithAttestationAndNoPlatform() throws {
        let tmp = TempDir()
        let store = try ImageStore(root: tmp.path)
        var amd = try Self.image(store, arch: "amd64")
        amd.platform = PlatformMatchingTests.p("linux/amd64")
        let arm = try Self.image(store, arch: "arm64", variant: "v8")      // no platform in the descriptor
        let att = Descriptor(mediaType: MediaType.ociManifest, digest: try store.content.put(Array("{}".utf8)), size: 2,
                             annotations: ["vnd.docker.reference.type": "attestation-manifest"],
                             platform: Platform(os: "unknown", architecture: "unknown"))
        let inner = try Self.index(store, [arm])
        let top = try Self.index(store, [amd, att, inner])
        let runnable = try store.platformManifests(of: top)
        #expect(runnable.map { $0.platform!.normalized.description } == ["linux/amd64", "linux/arm64"])
        #expect(try store.manifest(of: top, platform: try Platform(parsing: "linux/arm64")).0.digest == arm.digest)
        // Copying whole carries the attestation and the nested index, children first.
        let docs = try store.documents(of: top).map(\.digest)
        #expect(Set(docs) == Set([amd.digest, att.digest, inner.digest, arm.digest]))
        #expect(docs.firstIndex(of: arm.digest)! < docs.firstIndex(of: inner.digest)!)
        #expect(throws: OCIError.self) { try store.manifest(of: top, platform: try Platform(parsing: "linux/riscv64")) }
    }

    @Test func dockerManifestListWithVariant() throws {
        let tmp = TempDir()
        let store = try ImageStore(root: tmp.path)
        var amd = try Self.image(store, arch: "amd64", docker: true)
        amd.platform = PlatformMatchingTests.p("linux/amd64")
        var arm = try Self.image(store, arch: "arm64", variant: "v8", docker: true)
        arm.platform = PlatformMatchingTests.p("linux/arm64/v8")
        let list = try Self.index(store, [amd, arm], docker: true)
        let (chosen, manifest) = try store.manifest(of: list, platform: try Platform(parsing: "linux/arm64"))
        #expect(chosen.digest == arm.digest && manifest.mediaType == MediaType.dockerManifest)
        // A platform added under the same name replaces arm64/v8 rather than sitting beside it.
        try store.tag("img", list)
        var again = try Self.image(store, arch: "arm64")
        again.platform = try Platform(parsing: "linux/arm64")
        let merged = try store.add(platformManifest: again, as: "img")
        #expect(try store.platformManifests(of: merged).map(\.digest).sorted() == [amd.digest, again.digest].sorted())
    }

    @Test func layoutEntryChoice() throws {
        let tmp = TempDir()
        let store = try ImageStore(root: tmp.path)
        func named(_ tag: String, _ n: UInt8) -> Descriptor {
            Descriptor(mediaType: MediaType.ociIndex, digest: Digest.of([n]), size: 1,
                       annotations: ["org.opencontainers.image.ref.name": tag])
        }
        let entries = [named("latest-amd64", 1), named("latest", 2), named("latest-arm64", 3)]
        #expect(try store.chooseLayoutEntry(entries, tag: nil, digest: nil, path: "L")?.digest == Digest.of([2]))
        #expect(try store.chooseLayoutEntry(entries, tag: "latest-arm64", digest: nil, path: "L")?.digest == Digest.of([3]))
        #expect(try store.chooseLayoutEntry(entries, tag: nil, digest: Digest.of([1]), path: "L")?.digest == Digest.of([1]))
        #expect(try store.chooseLayoutEntry([named("v1", 4)], tag: nil, digest: nil, path: "L")?.digest == Digest.of([4]))
        #expect(throws: OCIError.self) { try store.chooseLayoutEntry([named("a", 1), named("b", 2)], tag: nil, digest: nil, path: "L") }
        #expect(throws: OCIError.self) { try store.chooseLayoutEntry(entries, tag: "nope", digest: nil, path: "L") }
    }
}

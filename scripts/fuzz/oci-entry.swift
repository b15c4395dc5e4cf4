// libFuzzer entry point for the image documents: the fuzzer's bytes are a manifest or an index as
// every reader takes one (Document.decode, under a descriptor of each media type, and
// detectedMediaType when nothing types it; indexEntries over it), an image config, a descriptor
// and a platform (decodeJSON), and a digest. A document that decodes must encode and decode back
// to itself; platform matching runs over an index's entries; a platform's normal form is stable.
// Any crash, hang, leak or broken property is a bug. Built by scripts/fuzz/oci.
import Foundation
import RBuildOCI
import RBuildSystem

/// What the builder asks an index for (pull --platform, FROM --platform, the host).
let wanted = [Platform(os: "linux", architecture: "amd64"), Platform(os: "linux", architecture: "arm64"),
              Platform(os: "linux", architecture: "arm", variant: "v6"), Platform(os: "linux", architecture: "amd64", variant: "v3")]
    .map(PlatformMatcher.init)

/// The document decoded as `type`, after checking that it survives a round trip.
func decoded<T: Codable & Equatable>(_ type: T.Type, _ bytes: [UInt8]) -> T? {
    guard let value = try? decodeJSON(type, from: bytes, what: "fuzz") else { return nil }
    guard let again = try? canonicalJSON(value) else { fail("a decoded \(type) does not encode") }
    let text = String(decoding: again, as: UTF8.self)
    guard let back = try? decodeJSON(type, from: again, what: "re-encoded") else { fail("a \(type) re-encoded does not decode: \(text)") }
    check(back == value, "a \(type) changes in a round trip: \(text)")
    return value
}

func inspect(_ p: Platform) {
    let n = p.normalized
    check(n.normalized == n, "normalising \(p) twice gives \(n.normalized), not \(n)")
    check(p.isSame(as: p), "\(p) is not the same as itself")
    _ = p.description
}

func inspect(_ d: Descriptor) {
    _ = d.isAttestation
    _ = MediaType.isIndex(d.mediaType) || MediaType.isManifest(d.mediaType) || MediaType.isLayer(d.mediaType)
    check((try? Digest(parsing: d.digest.description)) == d.digest, "digest \(d.digest) does not parse back")
    if let p = d.platform { inspect(p) }
}

/// What a descriptor may say a document is: each kind of manifest and index, and neither.
let mediaTypes = [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList, MediaType.ociConfig]

func inspect(_ document: Document) {
    switch document {
    case .manifest(let m):
        ([m.config] + m.layers).forEach(inspect)
    case .index(let index):
        index.manifests.forEach(inspect)
        for matcher in wanted { _ = matcher.best(index.manifests) }
        _ = PlatformMatcher.describe(index.manifests)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = [UInt8](UnsafeBufferPointer(start: data, count: size))
    let digest = Digest.of(bytes)
    for type in mediaTypes {
        let d = Descriptor(mediaType: type, digest: digest, size: Int64(size))
        if let document = try? Document.decode(bytes, as: d, from: "fuzz") { inspect(document) }
        // The entries under it as an index (a nested index is not there to read).
        _ = try? indexEntries(under: d, from: "fuzz") { e in
            guard e.digest == digest else { throw OCIError(.missingBlob, "not here") }
            return bytes
        }
    }
    if let type = try? Document.detectedMediaType(bytes, digest: digest, from: "fuzz") {
        check(MediaType.isManifest(type) || MediaType.isIndex(type), "detectedMediaType gave \(type)")
    }
    // The types themselves, round trips checked (what rbuild writes back out).
    if let m = decoded(Manifest.self, bytes) { inspect(.manifest(m)) }
    if let index = decoded(Index.self, bytes) { inspect(.index(index)) }
    if let config = decoded(ImageConfig.self, bytes) {
        inspect(config.platform)
        _ = try? config.checkDiffIDCount(layers: 1, "fuzz")
        check(config.rootfs.diff_ids.allSatisfy { (try? Digest(parsing: $0.description)) == $0 }, "a diff_id does not parse back")
    }
    if let d = decoded(Descriptor.self, bytes) { inspect(d) }
    if let p = decoded(Platform.self, bytes) { inspect(p) }
    let text = inputText(data, size)
    if let d = try? Digest(parsing: text) {
        check(d.description == text, "digest \(text) prints as \(d)")
    }
    return 0
}

import Foundation
import RBuildAttest
import RBuildDockerfile
import RBuildOCI
import RBuildSnapshots
import RBuildSolver
import RBuildSystem

/// rbuild's version, as the SBOM's creator and the provenance's builder name it.
public let rbuildVersion = "0.4.0"

/// What `--provenance`, `--sbom` and `--attest` ask for.
public struct AttestationRequest: Sendable, Equatable {
    /// nil: no provenance.
    public var provenance: ProvenanceInput.Mode?
    public var sbom = false

    public init(provenance: ProvenanceInput.Mode? = nil, sbom: Bool = false) {
        self.provenance = provenance
        self.sbom = sbom
    }

    public var isEmpty: Bool { provenance == nil && !sbom }

    /// `--provenance VALUE`: `true`/`1` (mode=min, as buildx), `false`/`0`, `mode=min|max`, or
    /// comma-separated fields of `--attest type=provenance,…`.
    public mutating func addProvenance(_ text: String) throws {
        switch text.lowercased() {
        case "true", "1", "": provenance = .min
        case "false", "0": provenance = nil
        default:
            var mode = ProvenanceInput.Mode.min, disabled = false
            for field in text.split(separator: ",") {
                let kv = field.split(separator: "=", maxSplits: 1).map { String($0).lowercased() }
                switch (kv[0], kv.count == 2 ? kv[1] : nil) {
                case ("mode", let v?):
                    guard let m = ProvenanceInput.Mode(rawValue: v) else { throw BuildFailure("--provenance \(text): mode=\(v) (expected min or max)") }
                    mode = m
                case ("disabled", let v?): disabled = v == "true"
                case ("type", "provenance"?), ("version", _), ("builder-id", _), ("reproducible", _): continue
                default: throw BuildFailure("--provenance \(text): unknown field \(field) (expected mode=min|max)")
                }
            }
            provenance = disabled ? nil : mode
        }
    }

    /// `--sbom VALUE`: `true`/`1`, `false`/`0`, or fields (`generator=` is refused: rbuild's own scanners make the SBOM).
    public mutating func addSBOM(_ text: String) throws {
        switch text.lowercased() {
        case "true", "1", "": sbom = true
        case "false", "0": sbom = false
        default:
            var on = true
            for field in text.split(separator: ",") {
                let kv = field.split(separator: "=", maxSplits: 1).map { String($0).lowercased() }
                switch (kv[0], kv.count == 2 ? kv[1] : nil) {
                case ("disabled", let v?): on = v != "true"
                case ("type", "sbom"?): continue
                case ("generator", _): throw BuildFailure("--sbom \(text): generator= is not supported: rbuild scans the image itself (dpkg, apk, rpm, Python, Node)")
                default: throw BuildFailure("--sbom \(text): unknown field \(field)")
                }
            }
            sbom = on
        }
    }

    /// `--attest type=provenance|sbom,…`.
    public mutating func addAttest(_ text: String) throws {
        let type = text.split(separator: ",").first { $0.lowercased().hasPrefix("type=") }.map { String($0.dropFirst(5)).lowercased() }
        switch type {
        case "provenance": try addProvenance(text)
        case "sbom": try addSBOM(text)
        default: throw BuildFailure("--attest \(text): expected type=provenance or type=sbom")
        }
    }
}

extension Builder {
    /// The attestations of each built image, in the order of `images`: an SPDX SBOM of the
    /// packages in its root and an SLSA v1 provenance of what built it.
    func attestations(for images: [BuiltImage], stages: [LoweredStage], solver: Solver, options: BuildOptions,
                      started: Int64) async throws -> [[Attestation]] {
        let request = options.attestations
        guard !request.isEmpty else { return images.map { _ in [] } }
        let epoch = options.layer.sourceDateEpoch
        let finished = epoch ?? Int64(Date().timeIntervalSince1970)
        var out: [[Attestation]] = []
        for (image, stage) in zip(images, stages) {
            var list: [Attestation] = []
            let platform = stage.platform.description
            if let mode = request.provenance {
                var p = ProvenanceInput(builderID: "https://rbuild.dev/builder/local", platform: platform,
                                        dockerfileName: options.dockerfileName,
                                        dockerfileDigest: Digest.of(Array(options.dockerfileText.utf8)),
                                        started: epoch ?? started, finished: finished)
                p.mode = mode
                p.args = options.buildArgs
                p.target = options.target
                let vertices = Graph.walk([stage.root])
                var sources: [String: ProvenanceInput.Source] = [:]
                for v in vertices {
                    switch v.op {
                    case .source(.image(let ref, let manifest, let pl)):
                        let uri = "pkg:docker/\(ref)?platform=\(pl.description.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? pl.description)"
                        sources[uri] = .init(uri: uri, digest: manifest)
                    case .source(.local(let name, _, _)):
                        let uri = "file://" + (name.isEmpty ? "context" : name)
                        sources[uri] = .init(uri: uri, digest: try await solver.cacheKey(v))
                    case .source(.http(let url, _)):
                        sources[url] = .init(uri: url, digest: try await solver.cacheKey(v))
                    case .source(.git(let g)):
                        // As BuildKit records them: the remote (credentials hidden) and ref, by commit.
                        let uri = GitReference.redact(g.remote) + (g.ref.isEmpty ? "" : "#" + g.ref)
                        sources[uri] = .init(uri: uri, gitCommit: try await solver.resolveGit(v).commit)
                    default:
                        if mode == .max, let o = v.origin {
                            p.steps.append((name: "\(o.file):\(o.line) \(o.instruction)", key: try await solver.cacheKey(v).description))
                        }
                    }
                }
                p.sources = sources.keys.sorted().map { sources[$0]! }
                list.append(Attestation(predicateType: Attestation.slsaProvenanceV1, predicate: try Provenance.predicate(p)))
            }
            if request.sbom {
                let view = SnapshotView(try rootfs(of: image))
                let (packages, distribution) = PackageScanner.scan(view)
                let doc = try SPDX.document(name: "rbuild-sbom-\(platform)", packages: packages, distribution: distribution,
                                            created: epoch ?? finished, tool: "rbuild-\(rbuildVersion)")
                list.append(Attestation(predicateType: Attestation.spdx, predicate: doc))
            }
            out.append(list)
        }
        return out
    }
}

/// The attestations attached to an image in the store, as JSON: for each platform (of the
/// manifest an attestation manifest refers to), its predicates by predicate type —
/// `{"linux/amd64": {"https://slsa.dev/provenance/v1": {…}, "https://spdx.dev/Document": {…}}}`.
public func attestationsJSON(of image: Descriptor, store: ImageStore) throws -> [UInt8] {
    var out: [String: Any] = [:]
    if MediaType.isIndex(image.mediaType) {
        let index = try decodeIndex(try store.content.read(image), as: image)
        var platformOf: [Digest: String] = [:]
        for m in index.manifests where !m.isAttestation { platformOf[m.digest] = m.platform?.description ?? "unknown" }
        for m in index.manifests where m.isAttestation {
            guard let ref = m.annotations?["vnd.docker.reference.digest"], let subject = try? Digest(parsing: ref) else { continue }
            out[platformOf[subject] ?? subject.description] = try AttestationManifest.predicates(of: m, store: store.content)
        }
    }
    return Array(try JSONSerialization.data(withJSONObject: out, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]))
}

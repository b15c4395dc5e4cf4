import Foundation
import RBuildOCI
import RBuildSystem

/// One attestation of an image, before it has a subject: its in-toto predicate type and the
/// predicate (JSON). `AttestationManifest.make` wraps it in a statement naming the exported
/// manifest, as buildx attaches them.
public struct Attestation: Sendable, Equatable {
    public var predicateType: String
    public var predicate: [UInt8]

    public init(predicateType: String, predicate: [UInt8]) {
        self.predicateType = predicateType
        self.predicate = predicate
    }

    public static let slsaProvenanceV1 = "https://slsa.dev/provenance/v1"
    public static let spdx = "https://spdx.dev/Document"
}

/// Sorted keys, no escaped slashes: the same JSON for the same value, every time.
func stableJSON(_ object: Any) throws -> [UInt8] {
    Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
}

/// The RFC 3339 form of a time (UTC, whole seconds).
func rfc3339(_ seconds: Int64) -> String {
    RFC3339.format(seconds: seconds)
}

public enum SPDX {
    /// An SPDX 2.3 JSON document of the packages found in an image's root. Its namespace and
    /// times come from `name` and `created` only, so the same root gives the same document.
    public static func document(name: String, packages: [FoundPackage], distribution: String?, created: Int64,
                                tool: String) throws -> [UInt8] {
        var ids = Set<String>()
        let entries: [[String: Any]] = packages.map { p in
            // SPDX ids allow letters, digits, '.' and '-'.
            let base = "SPDXRef-Package-\(p.kind.rawValue)-" + String(p.name.map { $0.isLetter || $0.isNumber || $0 == "." ? $0 : "-" })
            var id = base
            var n = 2
            while !ids.insert(id).inserted { id = base + "-\(n)"; n += 1 }
            var e: [String: Any] = [
                "name": p.name, "SPDXID": id, "versionInfo": p.version, "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false, "licenseConcluded": "NOASSERTION",
                // A database's free-form license text is no SPDX expression: it goes in the comment.
                "licenseDeclared": "NOASSERTION",
                "externalRefs": [["referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                  "referenceLocator": p.purl(distribution: distribution)]],
                "sourceInfo": "acquired package info from \(p.kind.rawValue) metadata: \(p.location)",
            ]
            if let l = p.license, !l.isEmpty { e["comment"] = "license: " + l }
            if let s = p.source, !s.isEmpty { e["annotations"] = [["annotationType": "OTHER", "annotator": "Tool: \(tool)",
                                                                  "annotationDate": rfc3339(created), "comment": "source: " + s]] }
            return e
        }
        let namespaceID = Digest.of(Array((name + "\n" + packages.map { "\($0.kind.rawValue) \($0.name) \($0.version)" }.joined(separator: "\n")).utf8)).hex
        let doc: [String: Any] = [
            "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT", "name": name,
            "documentNamespace": "https://rbuild.dev/spdxdocs/\(namespaceID)",
            "creationInfo": ["created": rfc3339(created), "creators": ["Tool: \(tool)"]],
            "packages": entries,
            "relationships": entries.map { ["spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                                            "relatedSpdxElement": $0["SPDXID"] as! String] },
        ]
        return try stableJSON(doc)
    }
}

/// What a build's SLSA provenance says (`--provenance`, `--attest type=provenance`).
public struct ProvenanceInput: Sendable {
    /// `min`: what the build was given and the sources it resolved; `max` also each step.
    public enum Mode: String, Sendable { case min, max }
    public struct Source: Sendable {
        public var uri: String
        /// Algorithm → hex (a git commit is `sha1`).
        public var digest: [String: String]
        public init(uri: String, digest: Digest) { self.uri = uri; self.digest = [digest.algorithm: digest.hex] }
        public init(uri: String, gitCommit: String) {
            self.uri = uri
            digest = [gitCommit.count == 64 ? "sha256" : "sha1": gitCommit]
        }
    }
    public var mode: Mode = .min
    public var builderID: String
    /// build-arg names and values (never secrets: those are not build args).
    public var args: [String: String] = [:]
    public var target: String?
    public var platform: String
    public var dockerfileName: String
    public var dockerfileDigest: Digest
    /// Base images (pkg:docker/NAME@TAG?platform=…), the context and named contexts, each with
    /// its digest.
    public var sources: [Source] = []
    /// mode=max: the steps, in order, with their cache keys.
    public var steps: [(name: String, key: String)] = []
    public var started: Int64
    public var finished: Int64

    public init(builderID: String, platform: String, dockerfileName: String, dockerfileDigest: Digest, started: Int64, finished: Int64) {
        self.builderID = builderID
        self.platform = platform
        self.dockerfileName = dockerfileName
        self.dockerfileDigest = dockerfileDigest
        self.started = started
        self.finished = finished
    }
}

public enum Provenance {
    public static let buildType = "https://mobyproject.org/buildkit@v1"

    /// The SLSA v1 predicate, in BuildKit's field names where it has them.
    public static func predicate(_ p: ProvenanceInput) throws -> [UInt8] {
        var request: [String: Any] = ["frontend": "dockerfile.v0", "args": p.args.merging(["platform": p.platform]) { a, _ in a }]
        if let target = p.target { request["args"] = (request["args"] as! [String: String]).merging(["target": target]) { a, _ in a } }
        let invocation = Digest.of(Array(([p.dockerfileDigest.description, p.platform] + p.args.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                                              + p.sources.map { "\($0.uri)@\($0.digest.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined())" }).joined(separator: "\n").utf8)).hex
        var internals: [String: Any] = ["builderPlatform": p.platform]
        if p.mode == .max {
            internals["buildConfig"] = ["steps": p.steps.map { ["name": $0.name, "cacheKey": $0.key] }]
        }
        let predicate: [String: Any] = [
            "buildDefinition": [
                "buildType": buildType,
                "externalParameters": [
                    "configSource": ["path": p.dockerfileName, "digest": ["sha256": p.dockerfileDigest.hex]],
                    "request": request,
                ],
                "internalParameters": internals,
                "resolvedDependencies": p.sources.map { ["uri": $0.uri, "digest": $0.digest] },
            ],
            "runDetails": [
                "builder": ["id": p.builderID],
                "metadata": [
                    "invocationID": invocation,
                    "startedOn": rfc3339(p.started),
                    "finishedOn": rfc3339(p.finished),
                    "buildkit_completeness": ["request": true, "resolvedDependencies": p.mode == .max],
                    "buildkit_reproducible": false,
                    "buildkit_metadata": ["mode": p.mode.rawValue],
                ],
            ],
        ]
        return try stableJSON(predicate)
    }
}

/// The attestation manifest of one image manifest, as buildx writes it: an OCI manifest whose
/// layers are in-toto statements (`application/vnd.in-toto+json`, each annotated with its
/// predicate type) about `subject`, listed in the index with platform unknown/unknown and the
/// `vnd.docker.reference.digest`/`type` annotations.
public enum AttestationManifest {
    public static let statementType = "https://in-toto.io/Statement/v0.1"
    public static let layerMediaType = "application/vnd.in-toto+json"

    /// Stores the statements, their manifest and its config in `store`; returns the index entry.
    public static func make(subject: Descriptor, subjectName: String, attestations: [Attestation],
                            store: ContentStore) throws -> Descriptor {
        var layers: [Descriptor] = []
        for a in attestations {
            let bytes = try statement(a, subject: subject, subjectName: subjectName)
            let digest = try store.put(bytes)
            layers.append(Descriptor(mediaType: layerMediaType, digest: digest, size: Int64(bytes.count),
                                     annotations: ["in-toto.io/predicate-type": a.predicateType]))
        }
        let config = try stableJSON(["architecture": "unknown", "os": "unknown", "config": [String: Any](),
                                     "rootfs": ["type": "layers", "diff_ids": layers.map { $0.digest.description }]] as [String: Any])
        let configDigest = try store.put(config)
        let manifest = Manifest(mediaType: MediaType.ociManifest,
                                config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(config.count)),
                                layers: layers)
        let bytes = try canonicalJSON(manifest)
        let digest = try store.put(bytes)
        return Descriptor(mediaType: MediaType.ociManifest, digest: digest, size: Int64(bytes.count),
                          annotations: ["vnd.docker.reference.digest": subject.digest.description,
                                        "vnd.docker.reference.type": "attestation-manifest"],
                          platform: Platform(os: "unknown", architecture: "unknown"))
    }

    /// The in-toto statement of `attestation` about `subject`.
    public static func statement(_ attestation: Attestation, subject: Descriptor, subjectName: String) throws -> [UInt8] {
        guard let predicate = try? JSONSerialization.jsonObject(with: Data(attestation.predicate)) else {
            throw OCIError(.invalidArgument, "attestation \(attestation.predicateType): its predicate is not JSON")
        }
        let platform = subject.platform?.description ?? "unknown"
        return try stableJSON([
            "_type": statementType, "predicateType": attestation.predicateType,
            "subject": [["name": "pkg:docker/\(subjectName)?platform=\(platform.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? platform)",
                         "digest": [subject.digest.algorithm: subject.digest.hex]]],
            "predicate": predicate,
        ] as [String: Any])
    }

    /// The file a local or tar output holds an attestation in, as BuildKit names them.
    public static func fileName(_ predicateType: String) -> String {
        predicateType == Attestation.spdx ? "sbom.spdx.json" : predicateType == Attestation.slsaProvenanceV1 ? "provenance.json" : "attestation.json"
    }

    /// The statements of an attestation manifest, by predicate type (for `rbuild inspect`).
    public static func predicates(of manifest: Descriptor, store: ContentStore) throws -> [String: Any] {
        let m = try decodeManifest(try store.read(manifest), as: manifest)
        var out: [String: Any] = [:]
        for layer in m.layers where layer.mediaType == layerMediaType {
            guard let s = try JSONSerialization.jsonObject(with: Data(try store.read(layer))) as? [String: Any],
                  let type = s["predicateType"] as? String else { continue }
            out[type] = s["predicate"]
        }
        return out
    }
}

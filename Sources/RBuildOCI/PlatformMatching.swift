import Foundation
import RBuildSystem

// Platform matching as containerd's `platforms` package defines it, in the one place every
// command uses (pull, FROM, named contexts, run, inspect, save, exports). Registries spell the
// same machine several ways — Docker Hub's official images say `linux/arm64/v8`, buildx writes
// `linux/arm64` — so descriptors are compared in normal form, never field by field.

extension Descriptor {
    /// An attestation manifest (buildx's provenance and SBOM): listed in an index with platform
    /// unknown/unknown and `vnd.docker.reference.type: attestation-manifest`. It is never an
    /// image to run and never a platform to list, but it travels with its index.
    public var isAttestation: Bool {
        if annotations?["vnd.docker.reference.type"] == "attestation-manifest" { return true }
        if let p = platform, p.os == "unknown" || p.architecture == "unknown" { return true }
        return false
    }
}

/// Chooses, among an index's entries, the one to use for a wanted platform.
public struct PlatformMatcher: Sendable {
    public let wanted: Platform
    let order: [Platform]

    public init(_ wanted: Platform) {
        self.wanted = wanted
        order = wanted.compatible
    }

    /// 0 for an exact match, larger for a worse fallback; nil when `p` cannot run as `wanted`.
    public func rank(_ p: Platform?) -> Int? {
        guard let p else { return nil }
        return order.firstIndex { $0.isSame(as: p) }
    }

    public func matches(_ p: Platform?) -> Bool { rank(p) != nil }

    /// The best runnable entry for the wanted platform; attestations are never chosen. Ties go
    /// to the first listed, as the index orders them.
    public func best(_ entries: [Descriptor]) -> Descriptor? {
        var chosen: (Descriptor, Int)?
        for d in entries where !d.isAttestation {
            guard let r = rank(d.platform) else { continue }
            if chosen == nil || r < chosen!.1 { chosen = (d, r) }
        }
        return chosen?.0
    }

    /// The platforms `entries` offer, for an error message (attestations left out).
    public static func describe(_ entries: [Descriptor]) -> String {
        let names = entries.filter { !$0.isAttestation }.map { $0.platform?.description ?? "unknown" }
        return names.isEmpty ? "no runnable image" : names.joined(separator: ", ")
    }
}

import Foundation

// Platform matching as containerd's `platforms` package defines it, in the one place every
// command uses (pull, FROM, named contexts, run, inspect, save, exports). Registries spell the
// same machine several ways — Docker Hub's official images say `linux/arm64/v8`, buildx writes
// `linux/arm64` — so descriptors are compared in normal form, never field by field.

extension Platform {
    /// The normal form: architecture aliases resolved (x86_64, aarch64, armhf…), arm64's implied
    /// `v8` and amd64's implied `v1` dropped, arm's default `v7` filled in. Documents keep the
    /// spelling they came with; only comparisons use this.
    public var normalized: Platform {
        var p = self
        p.os = p.os.lowercased()
        p.architecture = p.architecture.lowercased()
        p.variant = p.variant?.lowercased()
        if p.variant == "" { p.variant = nil }
        p.normalise()
        if p.architecture == "amd64" && p.variant == "v1" { p.variant = nil }
        p.osVersion = nil
        p.osFeatures = nil
        return p
    }

    /// Whether two spellings name the same platform (`linux/arm64` and `linux/arm64/v8`).
    public func isSame(as other: Platform) -> Bool {
        let a = normalized, b = other.normalized
        return a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }

    /// The platforms an image may be for so that it runs as this one, best first: itself, then
    /// older variants of the same architecture (amd64/v3 → v2 → plain; arm/v7 → v6 → v5;
    /// arm64/v9 → plain) — containerd's `platforms.Only` without its amd64 → 386 step: an amd64
    /// build silently based on a 32-bit image is a surprise no user asks for (BuildKit resolves
    /// bases strictly too).
    public var compatible: [Platform] {
        let p = normalized
        var out = [p]
        func level(_ v: String?) -> Int? { v.flatMap { Int($0.dropFirst()) } }
        switch p.architecture {
        case "amd64":
            if let n = level(p.variant), n > 1 {
                for v in stride(from: n - 1, through: 2, by: -1) {
                    out.append(Platform(os: p.os, architecture: "amd64", variant: "v\(v)"))
                }
                out.append(Platform(os: p.os, architecture: "amd64"))
            }
        case "arm":
            if let n = level(p.variant), n > 5 {
                for v in stride(from: n - 1, through: 5, by: -1) {
                    out.append(Platform(os: p.os, architecture: "arm", variant: "v\(v)"))
                }
            }
        case "arm64":
            if p.variant != nil { out.append(Platform(os: p.os, architecture: "arm64")) }
        default:
            break
        }
        return out
    }
}

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

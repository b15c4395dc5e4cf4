import Foundation
import RBuildOCI
import RBuildRegistry
import RBuildSystem

/// An image a frontend named, resolved for one platform: its manifest (by digest: the source
/// op's content address) and its config (the environment, user, working dir and ONBUILD
/// triggers the lowering starts from).
public struct ResolvedImage: Sendable {
    public var reference: String
    public var manifest: Digest
    public var config: ImageConfig

    public init(reference: String, manifest: Digest, config: ImageConfig) {
        self.reference = reference
        self.manifest = manifest
        self.config = config
    }
}

/// What a frontend asks of the solver's side while lowering: an image's manifest and config.
public protocol ImageResolving: Sendable {
    func resolve(_ reference: String, platform: Platform) throws -> ResolvedImage
}

/// Resolves names as `FROM` does: `oci-layout://DIR[:TAG|@sha256:…]`, then the local store,
/// then a registry (pulled, once per process for one name and platform). `--pull` skips the
/// local store.
public final class ImageResolver: ImageResolving {
    let store: ImageStore
    let pull: Bool
    let reporter: ProgressReporter
    let pulls: InFlight<Descriptor>
    let layouts = LockedDictionary<String, Descriptor>()
    /// What a layout's layers may unpack to when their diff_ids are checked.
    let maxLayerSize: Int64

    public init(store: ImageStore, pull: Bool, reporter: ProgressReporter, pulls: InFlight<Descriptor> = InFlight(),
                maxLayerSize: Int64 = MaxLayerSize.defaultValue) {
        self.store = store
        self.pull = pull
        self.reporter = reporter
        self.pulls = pulls
        self.maxLayerSize = maxLayerSize
    }

    public func resolve(_ ref: String, platform: Platform) throws -> ResolvedImage {
        var found: (Descriptor, Manifest)?
        var localMiss: Error?
        if ref.hasPrefix("oci-layout://") {
            let spec = String(ref.dropFirst("oci-layout://".count))
            // Once per build: a layout named by several FROMs, COPY --froms or platforms is
            // checked and stored once.
            let top = try layouts[spec] ?? importLayout(spec)
            layouts.set(spec, top)
            found = try store.manifest(of: top, platform: platform)
        } else if !pull, let d = try store.lookup(ref) {
            // Here, but perhaps for other platforms only (another platform of this build pulled
            // it under this name): then the registry is asked for this one.
            do {
                found = try store.manifest(of: d, platform: platform)
            } catch {
                localMiss = error
            }
        }
        if found == nil {
            // Not here (or --pull): the registry, for this platform.
            let reference = try Reference(parsing: ref)
            do {
                let top = try pulls.run(CacheKey.of(["pull", reference.description, platform.description])) {
                    try reporter.step("[internal] pull \(reference) (\(platform))") { step in
                        try Distribution.pull(reference, platforms: [platform], store: store) { step.output($0) }
                    }
                }
                found = try store.manifest(of: top, platform: platform)
            } catch {
                let local = pull ? ""
                    : localMiss.map { "\(ref) in the local store: \($0); " }
                    ?? "\(ref) is not in the local store (\(store.root); `rbuild images` lists it, `rbuild load`/`import` add to it, `--build-context NAME=oci-layout://DIR` uses a layout), and "
                throw SolveError(local + "pulling \(reference) failed: \(error)")
            }
        }
        let (desc, manifest) = found!
        let image = try store.config(of: manifest)
        try image.checkDiffIDCount(layers: manifest.layers.count, "\(ref): manifest \(desc.digest)")
        return ResolvedImage(reference: ref, manifest: desc.digest, config: image)
    }

    /// `oci-layout://DIR[:TAG|@sha256:…]`: the layout's image checked and stored (as `rbuild
    /// load` does, without naming it); its entry for TAG or the digest, else `latest` (buildx).
    func importLayout(_ spec: String) throws -> Descriptor {
        var dir = spec, tag: String?, digest: Digest?
        do {
            if let at = spec.range(of: "@sha256:", options: .backwards) {
                dir = String(spec[..<at.lowerBound])
                digest = try Digest(parsing: String(spec[spec.index(after: at.lowerBound)...]))
            } else if let colon = spec.lastIndex(of: ":"), !spec[colon...].contains("/") {
                dir = String(spec[..<colon])
                tag = String(spec[spec.index(after: colon)...])
            }
            return try store.ingest(path: dir, tag: tag, digest: digest, maxLayerSize: maxLayerSize)
        } catch {
            throw SolveError("oci-layout://\(spec): \(error)")
        }
    }
}
